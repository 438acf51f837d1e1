package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain plays the rawwrite scenario's reader process when the test
// binary is started as one (runRawWrite starts os.Executable()).
func TestMain(m *testing.M) {
	if ok, err := RawReader(os.Args[1:]); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// TestRawWrite runs the rawwrite scenario small: every write lands on a
// socket of the reader process, and the result has a rate.
func TestRawWrite(t *testing.T) {
	var out, errb bytes.Buffer
	err := Run(context.Background(), "hubbench", []string{"--scenario", "rawwrite", "--conns", "50", "--events", "20000"}, &out, &errb)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errb.String())
	}
	var res struct {
		Scenario  string  `json:"scenario"`
		Connected int     `json:"connected"`
		Rate      float64 `json:"writesPerSecond"`
		Micros    float64 `json:"microsPerWrite"`
		Error     string  `json:"error"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("result %q: %v", out.String(), err)
	}
	if res.Scenario != "rawwrite" || res.Connected != 50 || res.Rate <= 0 || res.Micros <= 0 || res.Error != "" {
		t.Fatalf("result %+v", res)
	}
}

// TestRawWriteNeedsNoHubCredentials: the ceiling needs no secret or key,
// the hub's scenarios still do.
func TestRawWriteNeedsNoHubCredentials(t *testing.T) {
	if _, err := parseFlags("hubbench", &bytes.Buffer{}, []string{"--scenario", "rawwrite"}); err != nil {
		t.Errorf("rawwrite without credentials: %v", err)
	}
	if _, err := parseFlags("hubbench", &bytes.Buffer{}, []string{"--scenario", "unicast"}); err == nil {
		t.Error("unicast without --secret accepted")
	}
}
