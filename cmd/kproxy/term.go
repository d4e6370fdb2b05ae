package main

import (
	"io"
	"os"
)

// marker marks states in tables: on a terminal with a coloured mark, piped
// as the plain word (scripts and grep see exactly what /status says).
type marker struct{ on bool }

// markerFor marks when w is a terminal and NO_COLOR is not set
// (https://no-color.org).
func markerFor(w io.Writer) marker {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return marker{}
	}
	st, err := f.Stat()
	return marker{on: err == nil && st.Mode()&os.ModeCharDevice != 0}
}

// ANSI colours, each code five bytes long: every cell of a marked column
// gains the same number of invisible bytes, so tabwriter still aligns it.
const (
	green   = "\x1b[32m"
	yellow  = "\x1b[33m"
	red     = "\x1b[31m"
	neutral = "\x1b[39m"
	reset   = "\x1b[0m"
)

// state marks a cutover, group move or replication state, or a
// reachability ("true"/"false").
func (m marker) state(s string) string {
	if !m.on {
		return s
	}
	colour, mark := neutral, "·"
	switch s {
	case "flipped", "moved", "done", "steady", "true", "pass":
		colour, mark = green, "✔"
	case "holding", "draining", "copying", "moving", "running":
		colour, mark = yellow, "…"
	case "aborted", "refused", "failed", "false", "fail":
		colour, mark = red, "✖"
	}
	return colour + mark + " " + s + reset
}

// blank is an empty cell of a marked column: as many invisible bytes and
// visible columns as a marked state's prefix, so the table stays aligned.
func (m marker) blank() string {
	if !m.on {
		return ""
	}
	return neutral + "  " + reset
}
