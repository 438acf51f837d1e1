package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version describes the binary from its build information: the module
// version (a tag such as v1.2.0 when built from a tagged module, a
// pseudo-version or "(devel)" otherwise), the VCS commit and time that the
// go command stamps when it builds inside a Git checkout (with "modified"
// when the tree had changes), and the Go version and platform.
func version(bi *debug.BuildInfo, ok bool) string {
	mod, commit, when, modified := "(unknown)", "unknown", "", false
	goVersion := runtime.Version()
	if ok && bi != nil {
		if bi.Main.Version != "" {
			mod = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	s := fmt.Sprintf("hubd %s\ncommit: %s", mod, commit)
	if modified {
		s += " (modified)"
	}
	if when != "" {
		s += "\ncommit time: " + when
	}
	return s + fmt.Sprintf("\ngo: %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
}
