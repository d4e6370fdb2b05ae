package batchcrc

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// The CRC derived from the old one and the header patch equals the CRC
// computed over the patched bytes, for every length and patch.
func TestPatchedCRCMatchesFullCRC(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const hdr = 40 // a v2 batch header after the CRC
	for _, n := range []int{hdr, hdr + 1, hdr + 7, 100, 1000, 4096, 65537, 1 << 20} {
		for round := 0; round < 5; round++ {
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			old := crc32.Checksum(data, castagnoli)
			before := append([]byte(nil), data[:hdr]...)
			for i := 0; i < 1+rng.IntN(hdr); i++ {
				data[rng.IntN(hdr)] ^= byte(1 + rng.IntN(255))
			}
			if got, want := Patched(old, before, data[:hdr], n), crc32.Checksum(data, castagnoli); got != want {
				t.Fatalf("length %d: patched CRC %08x, full CRC %08x", n, got, want)
			}
		}
	}
}

func BenchmarkPatchedCRC(b *testing.B) {
	const hdr = 40 // a v2 batch header after the CRC
	before, after := make([]byte, hdr), make([]byte, hdr)
	after[5] = 1
	for b.Loop() {
		Patched(1234, before, after, 1<<20)
	}
}
