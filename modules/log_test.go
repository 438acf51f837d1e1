package modules_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/modules"
)

func TestLoggerRedactsTokens(t *testing.T) {
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJlc2ln"
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		cfg := config.Default()
		cfg.LogFormat = format
		log := modules.NewLogger(cfg.LogLevel, cfg.LogFormat, &b)
		log.Info("careless", "url", "/ws/realtime?token="+tok, "auth", "Bearer "+tok, "bare", tok)
		if strings.Contains(b.String(), tok) || strings.Contains(b.String(), "c2lnbmF0dXJl") {
			t.Fatalf("%s log holds the token: %s", format, b.String())
		}
		if !strings.Contains(b.String(), "careless") {
			t.Fatalf("%s log lost the message: %s", format, b.String())
		}
	}
}
