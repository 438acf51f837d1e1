// Package arch holds no code: its test reads `go list -deps` and fails when
// an import breaks an arrow of the architecture (docs/ARCHITECTURE.md).
package arch
