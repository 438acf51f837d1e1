package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hubd/hub/config"
)

// A test secret and key that pass the configuration's checks.
const (
	testSecret = "0123456789abcdef0123456789abcdef"
	testAPIKey = "0123456789abcdef"
)

// --- Kubernetes -------------------------------------------------------------

// object is the part of a Kubernetes object the tests read.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type deploymentSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
}

type container struct {
	Name string `yaml:"name"`
	Env  []struct {
		Name      string     `yaml:"name"`
		Value     *string    `yaml:"value"`
		ValueFrom *yaml.Node `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port yaml.Node `yaml:"port"`
	} `yaml:"tcpSocket"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Name       string    `yaml:"name"`
		Port       int       `yaml:"port"`
		TargetPort yaml.Node `yaml:"targetPort"`
	} `yaml:"ports"`
}

// readObjects parses every document of the YAML files in dir.
func readObjects(t *testing.T, dir string) (objs []object, files []string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Base(p))
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if o.Kind == "" || o.APIVersion == "" {
				t.Fatalf("%s: a document without kind or apiVersion", p)
			}
			objs = append(objs, o)
		}
	}
	return objs, files
}

func find(objs []object, kind, name string) *object {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Metadata.Name == name {
			return &objs[i]
		}
	}
	return nil
}

func decodeSpec[T any](t *testing.T, o *object) T {
	t.Helper()
	var v T
	if err := o.Spec.Decode(&v); err != nil {
		t.Fatalf("%s %s: spec: %v", o.Kind, o.Metadata.Name, err)
	}
	return v
}

// containerPort resolves a probe's or Service's port (a number or the name
// of a container port) to the container's port number.
func containerPort(t *testing.T, c container, port yaml.Node) int {
	t.Helper()
	if n, err := strconv.Atoi(port.Value); err == nil {
		return n
	}
	for _, p := range c.Ports {
		if p.Name == port.Value {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, port.Value)
	return 0
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// hubConfig loads the hub's configuration from the container's environment
// as hubd would: values as written, values from Secrets replaced by test
// values that pass the checks.
func hubConfig(t *testing.T, c container) config.Config {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.Value != nil:
			env = append(env, e.Name+"="+*e.Value)
		case e.Name == "HUB_JWT_SECRET":
			env = append(env, e.Name+"="+testSecret)
		case e.Name == "HUB_API_KEYS":
			env = append(env, e.Name+"="+testAPIKey)
		case e.Name == "HUB_NODE_NAME":
			env = append(env, e.Name+"=hub-7d9f8-abcde")
		default:
			t.Fatalf("env %s comes from elsewhere; give the test a value for it", e.Name)
		}
	}
	cfg, warnings, err := config.Load(nil, env)
	if err != nil {
		t.Fatalf("the manifest's configuration does not load: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("the manifest's configuration: %s", w)
	}
	return cfg
}

// preStopDelay is the time the preStop hook holds the pod before SIGTERM.
func preStopDelay(t *testing.T, c container) time.Duration {
	t.Helper()
	ps := c.Lifecycle.PreStop
	switch {
	case ps.Sleep != nil:
		return time.Duration(ps.Sleep.Seconds) * time.Second
	case ps.Exec != nil && len(ps.Exec.Command) == 2 && ps.Exec.Command[0] == "sleep":
		n, err := strconv.Atoi(ps.Exec.Command[1])
		if err != nil {
			t.Fatalf("preStop %q", ps.Exec.Command)
		}
		return time.Duration(n) * time.Second
	}
	return 0
}

func TestKubernetesManifests(t *testing.T) {
	objs, files := readObjects(t, "kubernetes")

	// kustomization.yaml names every other manifest
	kust, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(kust, &k); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}

	dep := find(objs, "Deployment", "hub")
	if dep == nil {
		t.Fatal("no Deployment named hub")
	}
	spec := decodeSpec[deploymentSpec](t, dep)
	pod := spec.Template.Spec
	for key, v := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[key] != v {
			t.Errorf("the Deployment's selector %s=%s does not match its pods", key, v)
		}
	}
	var hubC *container
	for i := range pod.Containers {
		if pod.Containers[i].Name == "hub" {
			hubC = &pod.Containers[i]
		}
	}
	if hubC == nil {
		t.Fatal("no container named hub")
	}
	cfg := hubConfig(t, *hubC)
	if cfg.InternalAddr == "" {
		t.Error("HUB_INTERNAL_ADDR is not set: /metrics and the API would be public")
	}
	publicPort, internalPort := portOf(t, cfg.Addr), portOf(t, cfg.InternalAddr)

	// probes: readiness on /readyz and liveness on /healthz, both on the
	// public listener (/readyz is served there only)
	for _, p := range []struct {
		name  string
		probe *probe
		path  string
	}{{"readinessProbe", hubC.ReadinessProbe, "/readyz"}, {"livenessProbe", hubC.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no httpGet", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, *hubC, p.probe.HTTPGet.Port); got != publicPort {
			t.Errorf("%s: port %d, want HUB_ADDR's %d", p.name, got, publicPort)
		}
	}

	// the pod outlives the drain: preStop, then HUB_SHUTDOWN_TIMEOUT, then
	// at most one second until the process exits (the contract)
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds (the default, 30 s, would hide the choice)")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	pre := preStopDelay(t, *hubC)
	if pre == 0 {
		t.Error("no preStop delay: endpoints would still send connections to a draining pod")
	}
	if need := pre + cfg.ShutdownTimeout + time.Second; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v must exceed preStop %v + HUB_SHUTDOWN_TIMEOUT %v + 1s", grace, pre, cfg.ShutdownTimeout)
	}

	// runs as the image's non-root user
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	uid, _ := dockerfileUser(t)
	if pod.SecurityContext.RunAsUser == nil || strconv.Itoa(*pod.SecurityContext.RunAsUser) != uid {
		t.Errorf("runAsUser is not the Dockerfile's USER %s", uid)
	}
	if sc := hubC.SecurityContext; sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the hub container must not escalate privileges and needs no writable root file system")
	}

	// Services: the public one reaches HUB_ADDR, the internal one
	// HUB_INTERNAL_ADDR, each selecting the hub's pods
	for _, s := range []struct{ name, want string }{{"hub", "public"}, {"hub-internal", "internal"}} {
		o := find(objs, "Service", s.name)
		if o == nil {
			t.Errorf("no Service %s", s.name)
			continue
		}
		ss := decodeSpec[serviceSpec](t, o)
		for key, v := range ss.Selector {
			if spec.Template.Metadata.Labels[key] != v {
				t.Errorf("Service %s selects %s=%s, which the hub's pods lack", s.name, key, v)
			}
		}
		want := publicPort
		if s.want == "internal" {
			want = internalPort
		}
		if len(ss.Ports) != 1 || containerPort(t, *hubC, ss.Ports[0].TargetPort) != want {
			t.Errorf("Service %s does not target port %d", s.name, want)
		}
	}

	// the Redis wiring: HUB_REDIS_URL names a Service of the manifests on
	// the port of a Redis container it selects
	if cfg.Broker != "redis" {
		t.Fatalf("HUB_BROKER is %q, the example wires redis", cfg.Broker)
	}
	u, err := url.Parse(cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rsvc := find(objs, "Service", u.Hostname())
	if rsvc == nil {
		t.Fatalf("HUB_REDIS_URL names host %q, which is no Service of the manifests", u.Hostname())
	}
	rs := decodeSpec[serviceSpec](t, rsvc)
	var rdep *object
	for i := range objs {
		if objs[i].Kind != "Deployment" {
			continue
		}
		d := decodeSpec[deploymentSpec](t, &objs[i])
		match := len(rs.Selector) > 0
		for key, v := range rs.Selector {
			match = match && d.Template.Metadata.Labels[key] == v
		}
		if match {
			rdep = &objs[i]
		}
	}
	if rdep == nil {
		t.Fatalf("Service %s selects no Deployment", u.Hostname())
	}
	rd := decodeSpec[deploymentSpec](t, rdep)
	port := strconv.Itoa(portOf(t, u.Host))
	ok := false
	for _, p := range rs.Ports {
		if strconv.Itoa(p.Port) == port && containerPort(t, rd.Template.Spec.Containers[0], p.TargetPort) == 6379 {
			ok = true
		}
	}
	if !ok {
		t.Errorf("Service %s has no port %s leading to Redis's 6379", u.Hostname(), port)
	}
}

// --- Dockerfile -------------------------------------------------------------

type stage struct {
	from, name string
	lines      []string // instructions after FROM, continuation lines joined
}

func dockerfileStages(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || (strings.HasPrefix(line, "#") && cur == "") {
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if more, ok := strings.CutSuffix(line, "\\"); ok {
			cur += more + " "
			continue
		}
		cur += line
		fields := strings.Fields(cur)
		if strings.EqualFold(fields[0], "FROM") {
			s := stage{from: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				s.name = fields[3]
			}
			stages = append(stages, s)
		} else if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, cur)
		}
		cur = ""
	}
	if len(stages) == 0 {
		t.Fatal("no stage in the Dockerfile")
	}
	return stages
}

// dockerfileUser returns the uid and gid of the final stage's USER.
func dockerfileUser(t *testing.T) (uid, gid string) {
	t.Helper()
	stages := dockerfileStages(t)
	for _, l := range stages[len(stages)-1].lines {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			uid, gid, _ = strings.Cut(u, ":")
			return uid, gid
		}
	}
	t.Fatal("the final stage has no USER")
	return "", ""
}

func TestDockerfile(t *testing.T) {
	stages := dockerfileStages(t)
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
		for _, l := range s.lines {
			if strings.HasPrefix(strings.ToUpper(l), "HEALTHCHECK") {
				t.Errorf("stage %s has a HEALTHCHECK: orchestrators probe /readyz", s.name)
			}
		}
	}
	final := stages[len(stages)-1]
	if final.name != "runtime" || final.from != "scratch" {
		t.Errorf("the default target is %s FROM %s, want runtime FROM scratch", final.name, final.from)
	}
	pre, ok := byName["runtime-prebuilt"]
	if !ok || pre.from != "scratch" {
		t.Fatal("no runtime-prebuilt stage FROM scratch (what .ci/run builds)")
	}
	// the two runtime stages differ only in where their files come from
	notCopy := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if !strings.HasPrefix(l, "COPY ") {
				out = append(out, l)
			}
		}
		return out
	}
	if a, b := notCopy(final.lines), notCopy(pre.lines); !slices.Equal(a, b) {
		t.Errorf("runtime and runtime-prebuilt differ:\n%q\n%q", a, b)
	}
	copied := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if strings.HasPrefix(l, "COPY ") {
				f := strings.Fields(l)
				out = append(out, f[len(f)-1])
			}
		}
		return out
	}
	if a, b := copied(final.lines), copied(pre.lines); !slices.Equal(a, b) {
		t.Errorf("runtime copies to %q, runtime-prebuilt to %q", a, b)
	}
	uid, gid := dockerfileUser(t)
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s:%s: want a numeric non-root uid (scratch has no /etc/passwd)", uid, gid)
	}
	// the binary is static and reproducible
	build := strings.Join(byName["build"].lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/hubd"} {
		if !strings.Contains(build, want) {
			t.Errorf("the build stage does not build with %s", want)
		}
	}
	// the port of the manifests is exposed
	if !slices.ContainsFunc(final.lines, func(l string) bool {
		return strings.HasPrefix(l, "EXPOSE ") && slices.Contains(strings.Fields(l), "8080")
	}) {
		t.Error("the runtime stage does not EXPOSE 8080")
	}
}

// --- systemd ----------------------------------------------------------------

// unitFile parses a systemd unit: section -> key -> values (a key may repeat).
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string]map[string][]string{}
	sect := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			sect = strings.Trim(line, "[]")
			u[sect] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sect == "" {
				t.Fatalf("%s: line %q", path, line)
			}
			u[sect][k] = append(u[sect][k], v)
		}
	}
	return u
}

// envFile reads KEY=value lines, skipping comments.
func envFile(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		env = append(env, line)
	}
	return env
}

func TestSystemdUnit(t *testing.T) {
	const unit = "systemd/hubd.service"
	u := unitFile(t, unit)
	svc := u["Service"]
	for key, want := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
		"CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"KillSignal": "SIGTERM", "MemoryDenyWriteExecute": "yes",
	} {
		if got := svc[key]; len(got) != 1 || got[0] != want {
			t.Errorf("[Service] %s=%q, want %q", key, got, want)
		}
	}
	if !slices.Contains(svc["SystemCallFilter"], "@system-service") {
		t.Errorf("no SystemCallFilter=@system-service")
	}

	// the example environment file is a valid configuration (once its
	// secrets are filled in), and the unit waits for its drain
	env := envFile(t, "systemd/hubd.env.example")
	for i, kv := range env {
		switch {
		case kv == "HUB_JWT_SECRET=":
			env[i] = kv + testSecret
		case kv == "HUB_API_KEYS=":
			env[i] = kv + testAPIKey
		}
	}
	cfg, warnings, err := config.Load(nil, env)
	if err != nil {
		t.Fatalf("hubd.env.example: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("hubd.env.example: %q", warnings)
	}
	stop, err := time.ParseDuration(svc["TimeoutStopSec"][0])
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= cfg.ShutdownTimeout+time.Second {
		t.Errorf("TimeoutStopSec=%v must exceed HUB_SHUTDOWN_TIMEOUT %v + 1s", stop, cfg.ShutdownTimeout)
	}
	if got := svc["EnvironmentFile"]; len(got) != 1 || got[0] != "/etc/hubd/hubd.env" {
		t.Errorf("EnvironmentFile=%q", got)
	}

	// systemd's own checks, where systemd-analyze is installed: the unit
	// verifies, and its exposure stays low. ExecStart must name an
	// executable file for verify: this test's binary stands in for hubd.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit's syntax was not verified by systemd")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "hubd.service")
	unitText := strings.Replace(string(data), "ExecStart=/usr/local/bin/hubd", "ExecStart="+self, 1)
	if err := os.WriteFile(copyPath, []byte(unitText), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", copyPath).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for hubd\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.0 {
		t.Errorf("exposure level %v, want at most 2.0 (systemd-analyze security)", level)
	}
}
