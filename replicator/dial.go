package replicator

// The replicator's own broker connections, offered to the cutover
// controller for its drain's pipelined end-offset lookups
// (control/freeze.go): the same dialing (the client's TLS and SASL), the
// same frame reading and decoding.

import (
	"context"
	"io"
	"net"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DialBroker dials broker at addr the way cl does and asks its
// ApiVersions.
func DialBroker(ctx context.Context, cl *kgo.Client, broker int32, addr string) (net.Conn, *kmsg.ApiVersionsResponse, error) {
	return dialBroker(ctx, cl, broker, addr, 64<<10)
}

// Version is the highest version of key both kmsg and the broker speak,
// or -1.
func Version(av *kmsg.ApiVersionsResponse, key kmsg.Key, ours int16) int16 {
	return version(av, key, ours)
}

// ReadAnswer reads the next answer from rd into resp, checking that it
// answers the request sent with correlation id corr.
func ReadAnswer(rd io.Reader, corr int32, req kmsg.Request, resp kmsg.Response) error {
	frame, err := readFrame(rd, nil, 64<<20)
	if err != nil {
		return err
	}
	return decodeAnswer(frame, corr, req, resp, false)
}
