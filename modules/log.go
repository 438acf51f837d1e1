package modules

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
)

// LogModule provides the *slog.Logger: JSON off a terminal, text on one,
// unless HUB_LOG_FORMAT says otherwise.
var LogModule = fx.Module("log",
	fx.Provide(func(cfg config.Config) *slog.Logger { return NewLogger(cfg.LogLevel, cfg.LogFormat, os.Stderr) }),
)

// NewLogger builds a logger writing to w at levelName (debug, info, warn
// or error; HUB_LOG_LEVEL) in format (text or json; "" picks text on a
// terminal, else json: HUB_LOG_FORMAT). Every string value is redacted of
// tokens.
func NewLogger(levelName, format string, w io.Writer) *slog.Logger {
	var level slog.Level
	switch strings.ToLower(levelName) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			format = "text"
		}
	}
	o := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, o))
	}
	return slog.New(slog.NewJSONHandler(w, o))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// redactAttr keeps tokens out of the logs whatever a caller passes: any
// string value that holds a JWT, a token= query value or a Bearer header is
// redacted (internal/auth.Redact).
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindString {
		if s := a.Value.String(); len(s) > 16 {
			if r := auth.Redact(s); r != s {
				a.Value = slog.StringValue(r)
			}
		}
	}
	return a
}
