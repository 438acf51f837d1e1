//go:build !unix

package main

// raiseFileLimit: only Unix systems have RLIMIT_NOFILE.
func raiseFileLimit() error { return nil }
