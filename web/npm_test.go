package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// typescriptVersion is the TypeScript the package's types are checked
// with, installed from the npm registry once into the user's cache.
const typescriptVersion = "5"

// TestNPMPackage packs web/ as the npm package @hubd/client (npm pack),
// installs the tarball into a new project, imports it from Node and
// type-checks a small TypeScript program against its types with tsc
// --noEmit (strict), under the two module resolutions frontends use; a
// program with a type error must fail the check. Without npm it skips,
// unless HUB_REQUIRE_BROWSER=1.
func TestNPMPackage(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("HUB_REQUIRE_BROWSER") == "1" {
			t.Fatal("npm not found on PATH and HUB_REQUIRE_BROWSER=1")
		}
		t.Skip("npm not found on PATH")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("npm without node: %v", err)
	}
	tmp := t.TempDir()
	npmCache := filepath.Join(tmp, "npm-cache") // the pack and the offline install need no shared cache

	// npm pack: the tarball holds the module, its types, the README and
	// package.json, nothing else (no tests, no Go files).
	packed := runIn(t, ".", npm, "pack", "--json", "--pack-destination", tmp, "--cache", npmCache)
	var packs []struct {
		Name     string `json:"name"`
		Filename string `json:"filename"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(packed[strings.Index(packed, "["):]), &packs); err != nil || len(packs) != 1 {
		t.Fatalf("npm pack --json printed %q: %v", packed, err)
	}
	var inTarball []string
	for _, f := range packs[0].Files {
		inTarball = append(inTarball, f.Path)
	}
	slices.Sort(inTarball)
	if want := []string{"README.md", "hub.d.ts", "hub.js", "package.json"}; !slices.Equal(inTarball, want) {
		t.Errorf("tarball files = %v, want %v", inTarball, want)
	}
	if packs[0].Name != "@hubd/client" {
		t.Errorf("package name %q, want @hubd/client", packs[0].Name)
	}
	tarball := filepath.Join(tmp, packs[0].Filename)

	// A project that installs the tarball (no dependencies: offline).
	proj := filepath.Join(tmp, "proj")
	writeFiles(t, proj, map[string]string{
		"package.json": `{"name":"hub-client-check","private":true,"type":"module"}`,
	})
	runIn(t, proj, npm, "install", "--offline", "--no-audit", "--no-fund", "--cache", npmCache, tarball)

	// Node resolves the package's exports to the ES module.
	out := runIn(t, proj, node, "--input-type=module", "-e",
		`const m = await import("@hubd/client"); console.log(typeof m.Hub, typeof m.backoffDelay, m.DEFAULTS.transports.join(","))`)
	if got := strings.TrimSpace(out); got != "function function websocket,sse" {
		t.Errorf("node import printed %q", got)
	}

	tsc := installTypeScript(t, npm)
	writeFiles(t, proj, map[string]string{
		"good.ts":                goodTS,
		"bad.ts":                 badTS,
		"tsconfig.nodenext.json": tsconfig("nodenext", "nodenext", "good.ts"),
		"tsconfig.bundler.json":  tsconfig("esnext", "bundler", "good.ts"),
		"tsconfig.bad.json":      tsconfig("nodenext", "nodenext", "bad.ts"),
	})
	for _, cfg := range []string{"tsconfig.nodenext.json", "tsconfig.bundler.json"} {
		runIn(t, proj, node, tsc, "--noEmit", "-p", cfg)
	}

	// The negative case: each wrong use in bad.ts is an error at its line.
	cmd := exec.CommandContext(t.Context(), node, tsc, "--noEmit", "--pretty", "false", "-p", "tsconfig.bad.json")
	cmd.Dir = proj
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("tsc accepted bad.ts:\n%s", b)
	}
	for _, want := range badTSErrors {
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, fmt.Sprintf("bad.ts(%d,", want.line)) && strings.Contains(line, "error "+want.code+":") {
				found = true
			}
		}
		if !found {
			t.Errorf("tsc reports no %s at bad.ts line %d (%s):\n%s", want.code, want.line, want.why, b)
		}
	}
}

// goodTS uses the client's API as an application would, with its types.
const goodTS = `import { Hub, HubError, backoffDelay, closeAction, DEFAULTS } from "@hubd/client";
import type { HubEvent, HubStateChange, HubAck, TransportName } from "@hubd/client";

interface Draft { draftId: number }

const transports: TransportName[] = ["websocket", "sse"];
const hub = new Hub({
  url: "https://push.example.com",
  getToken: async () => "eyJ...",
  transports,
  backoff: { baseMs: 500, maxMs: 30000 },
  autoConnect: false,
  outbox: "local",
});
const off: () => void = hub.on<Draft>("DRAFT_UPDATED", (e: HubEvent<Draft>) => {
  const n: number = e.payload.draftId;
  const id: string = e.id;
  console.log(n.toFixed(0), id, e.timestamp);
});
hub.on("*", (e) => console.log(e.type));
hub.on("hub.state", (s: HubStateChange) => {
  if (s.state === "connected" && s.recovered === false) console.log("refetch", s.transport, s.missed);
  if (s.state === "closed" && s.error) console.log(s.error.code, s.error.reason);
});
hub.on("hub.nack", (e) => console.log(e.payload?.error.code, e.payload?.retryable));
hub.connect();
const last: string | null = hub.lastEventId;
const tr: TransportName | null = hub.transport;
console.log(last, tr, hub.state, hub.pendingSends, DEFAULTS.backoff.maxMs, backoffDelay(3), closeAction(4003));
async function order(): Promise<number> {
  try {
    const ack: HubAck<{ total: number }> = await hub.send<{ total: number }>("ORDER_UPDATE", { id: 1 }, { idempotencyKey: "k-1" });
    return ack.result.total + ack.status;
  } catch (err) {
    if (err instanceof HubError) console.log(err.code);
    return -1;
  }
}
void order();
off();
hub.close();
`

// badTS holds wrong uses of the API; badTSErrors are the errors tsc must
// report for them (line and code).
const badTS = `import { Hub } from "@hubd/client";

const hub = new Hub({ url: "https://push.example.com", transports: ["carrier-pigeon"] });
hub.on<{ draftId: number }>("DRAFT_UPDATED", (e) => e.payload.draftId.toUpperCase());
const s: number = hub.state;
hub.send("ORDER_UPDATE", {}, { idempotencyKey: 42 });
`

var badTSErrors = []struct {
	line      int
	code, why string
}{
	{3, "TS2322", `"carrier-pigeon" is no TransportName`},
	{4, "TS2339", "a number payload has no toUpperCase"},
	{5, "TS2322", "HubState is not a number"},
	{6, "TS2322", "idempotencyKey is a string"},
}

// tsconfig is a strict, no-emit configuration checking one file.
func tsconfig(module, resolution, file string) string {
	return fmt.Sprintf(`{"compilerOptions":{"strict":true,"noEmit":true,"target":"es2022","lib":["es2022","dom"],`+
		`"module":%q,"moduleResolution":%q,"skipLibCheck":false,"types":[]},"files":[%q]}`, module, resolution, file)
}

// installTypeScript returns the path of tsc from typescript@5, installed
// from the npm registry into $HOME/.cache/hub-test/typescript-5 on first
// use (into a temporary directory, then renamed, so that a failed or
// concurrent install leaves no half-installed copy).
func installTypeScript(t *testing.T, npm string) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = t.TempDir()
	}
	dir := filepath.Join(cache, "hub-test", "typescript-"+typescriptVersion)
	tsc := filepath.Join(dir, "node_modules", "typescript", "bin", "tsc")
	if _, err := os.Stat(tsc); err == nil {
		return tsc
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	staging, err := os.MkdirTemp(filepath.Dir(dir), "typescript-install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(staging)
	writeFiles(t, staging, map[string]string{"package.json": `{"private":true}`})
	runIn(t, staging, npm, "install", "--no-audit", "--no-fund", "--no-save", "typescript@"+typescriptVersion)
	if err := os.Rename(staging, dir); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, statErr := os.Stat(tsc); statErr != nil { // not another run's install
			t.Fatalf("install typescript: %v", err)
		}
	}
	return tsc
}

// runIn runs a command in dir and returns its standard output; a failure
// fails the test with the output.
func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s%s", filepath.Base(name), strings.Join(args, " "), dir, err, out, stderr.String())
	}
	return string(out)
}

// writeFiles writes files (name -> content) into dir, creating it.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
