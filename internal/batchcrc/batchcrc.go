// Package batchcrc derives a record batch's CRC-32C after a patch of its
// header from the old CRC and the patch alone.
//
// The replicator's copy and the proxy's Produce (virtual producer ids)
// patch only header fields of a batch, 40 bytes at most at the start of the
// CRC-covered region [21:], yet the CRC-32C covers the whole batch.
// Computing it again would read every batch once more (a tenth of the
// copy's CPU, and of the proxy's produce path's); deriving it does not, and
// a batch that did not match its CRC still does not after the patch, so
// the broker still refuses a corrupt batch (CORRUPT_MESSAGE) instead of
// kproxy hiding the corruption under a fresh CRC.
//
// Why that works: a CRC without its initial value and final inversion (the
// "raw" register) is linear over GF(2), and the full CRC differs from it by
// a constant that depends only on the length. So for equal-length inputs
// crc(new) = crc(old) ^ raw(old ^ new). old ^ new is the 40-byte header
// difference d followed by k zero bytes, and feeding a zero byte to the raw
// register multiplies it by x^8 modulo the polynomial, so raw(d || 0^k) =
// raw(d) * x^(8k) mod P. The multiplication costs a few hundred bit
// operations whatever the batch size.
package batchcrc

import (
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MinBytes is the batch size from which deriving the CRC (about
// 1 µs) is cheaper than computing it again (hardware CRC-32C, a few GB/s).
const MinBytes = 4096

// castagnoliReflected is CRC-32C's polynomial in the bit-reflected form the
// table-driven CRC uses: bit 31 holds x^0, bit 0 holds x^31.
const castagnoliReflected = 0x82F63B78

// gfMul multiplies a and b modulo the polynomial, both reflected.
func gfMul(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		// b *= x
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReflected
		} else {
			b >>= 1
		}
	}
	return p
}

// xPow2n[i] is x^(2^i) mod P, reflected.
var xPow2n = func() (t [64]uint32) {
	t[0] = 1 << 30 // x^1
	for i := 1; i < len(t); i++ {
		t[i] = gfMul(t[i-1], t[i-1])
	}
	return t
}()

// xPowBytes is x^(8n) mod P, reflected: the factor n zero bytes apply to a
// raw CRC register.
func xPowBytes(n int) uint32 {
	p := uint32(1) << 31 // x^0
	for i := 3; n != 0; i, n = i+1, n>>1 {
		if n&1 != 0 {
			p = gfMul(xPow2n[i], p)
		}
	}
	return p
}

// Patched is the CRC-32C of data whose first len(before) bytes changed
// from before to after (equal lengths) and whose CRC was old. after is
// XORed with before in place for the computation and restored: the
// difference is taken where it already lies on the heap, since a local
// array handed to crc32.Update escapes (an allocation per batch).
func Patched(old uint32, before, after []byte, total int) uint32 {
	after = after[:len(before)]
	for i := range before {
		after[i] ^= before[i]
	}
	// raw(d): crc32.Update inverts its input and output around the
	// register; start it from 0 and take the register back out.
	raw := ^crc32.Update(^uint32(0), castagnoli, after)
	for i := range before {
		after[i] ^= before[i]
	}
	return old ^ gfMul(raw, xPowBytes(total-len(before)))
}
