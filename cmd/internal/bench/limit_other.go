//go:build !unix

package bench

// raiseFileLimit: only Unix systems have RLIMIT_NOFILE.
func raiseFileLimit() error { return nil }
