package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{
			name: "tagged and stamped",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/hubd/hub", Version: "v1.2.0"},
				Settings: []debug.BuildSetting{
					{Key: "vcs", Value: "git"},
					{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
					{Key: "vcs.time", Value: "2026-12-05T10:00:00Z"},
					{Key: "vcs.modified", Value: "false"},
				}},
			ok: true,
			want: "hubd v1.2.0\ncommit: 0123456789abcdef0123456789abcdef01234567\n" +
				"commit time: 2026-12-05T10:00:00Z\ngo: go1.26.8 " + platform + "\n",
		},
		{
			name: "modified tree",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			ok:   true,
			want: "hubd (devel)\ncommit: abc (modified)\ngo: go1.26.8 " + platform + "\n",
		},
		{
			name: "no build info",
			ok:   false,
			want: "hubd (unknown)\ncommit: unknown\ngo: " + runtime.Version() + " " + platform + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := version(tt.bi, tt.ok); got != tt.want {
				t.Errorf("version() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	// the running test binary has build info of its own
	if got := version(debug.ReadBuildInfo()); !strings.Contains(got, "go: "+runtime.Version()) {
		t.Errorf("version of the test binary: %q", got)
	}
}
