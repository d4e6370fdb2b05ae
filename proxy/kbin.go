package proxy

import "github.com/twmb/franz-go/pkg/kbin"

func kbinReader(b []byte) *kbin.Reader { return &kbin.Reader{Src: b} }
