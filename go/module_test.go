package qemumachine

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// notCalled lists the header functions this package deliberately does not call, and why. Every
// other function of the header must be called somewhere in the package (TestEveryHeaderFunctionIsWrapped).
var notCalled = map[string]string{
	"qm_last_error_status":  "the status is the failing call's return value, which the *Error carries",
	"qm_last_error_message": "qm_last_error_message_dup gives the same text in one call",
}

// internalOnly lists the header functions that every call uses inside (the error path, the
// freeing of returned strings) rather than one Go function wrapping each.
var internalOnly = map[string]bool{
	"qm_last_error_message_dup": true,
	"qm_last_error_qmp_class":   true,
	"qm_last_error_qmp_desc":    true,
	"qm_string_free":            true,
}

// Every function of the header this package is compiled against is called by the package:
// a function added to the C API makes this test fail, naming it, until it is wrapped (see the
// README's "Adding a wrapper") or listed in notCalled with a reason.
func TestEveryHeaderFunctionIsWrapped(t *testing.T) {
	out, err := exec.Command("pkg-config", "--variable=includedir", "qemumachine").Output()
	if err != nil {
		t.Fatalf("pkg-config --variable=includedir qemumachine: %v", err)
	}
	header, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "qemumachine.h"))
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^[a-z][^(/]*\b(qm_[a-z0-9_]+)\(`)
	var functions []string
	for _, m := range decl.FindAllSubmatch(header, -1) {
		functions = append(functions, string(m[1]))
	}
	if len(functions) < 90 {
		t.Fatalf("found only %d functions in the header: the pattern no longer matches it", len(functions))
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var source bytes.Buffer
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		source.Write(b)
	}
	var missing []string
	called := 0
	for _, fn := range functions {
		// Called from Go (C.fn(...)) or from the C helpers of a preamble (fn(...)).
		isCalled := bytes.Contains(source.Bytes(), []byte("C."+fn+"(")) ||
			regexp.MustCompile(`[^.\w]`+fn+`\(`).Match(stripComments(source.Bytes()))
		_, excused := notCalled[fn]
		switch {
		case isCalled && excused:
			t.Errorf("%s is called but listed in notCalled", fn)
		case isCalled:
			called++
		case !excused:
			missing = append(missing, fn)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("header functions not wrapped: %s", strings.Join(missing, ", "))
	}
	// Each wrapped function is named in the documentation of its Go counterpart, so that
	// `go doc` leads from the C name to the Go one; the ones used only inside every call
	// (the error accessors, qm_string_free) need not be.
	docs := commentsOnly(source.Bytes())
	for _, fn := range functions {
		if _, excused := notCalled[fn]; excused || internalOnly[fn] {
			continue
		}
		if !regexp.MustCompile(`\b` + fn + `\b`).Match(docs) {
			t.Errorf("%s is not named in any doc comment", fn)
		}
	}
	t.Logf("%d of %d header functions called; not called, by design: %d", called, len(functions), len(notCalled))
}

// stripComments drops // comment lines (Go and C), so that a function named only in a comment
// does not count as called.
func stripComments(src []byte) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// commentsOnly keeps the // comments of src.
func commentsOnly(src []byte) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			out.WriteString(line[i:])
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// Another module uses this one as its README says: through a replace directive, then from a
// vendor directory with the module's directory gone. The go command never goes to the network
// (GOPROXY=off), and without the replace directive the build fails instead of fetching.
func TestUseFromAnotherModule(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go command to build the other module with")
		}
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=", "GOPRIVATE=qemu-machine.invalid", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	consumer := filepath.Join(work, "consumer")
	must(t, os.MkdirAll(consumer, 0o755))
	src, err := os.ReadFile(filepath.Join("testdata", "consumer", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(consumer, "main.go"), src, 0o644))
	want := "status: running\nQMP error class: CommandNotFound\nexit code: 0 <nil>\n"

	// Without a replace directive: the build fails.
	run(consumer, goBin, "mod", "init", "example.com/consumer")
	run(consumer, goBin, "mod", "edit", "-require=qemu-machine.invalid/qemumachine@v0.1.0")
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(work, "never"), ".")
	cmd.Dir = consumer
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "qemu-machine.invalid/qemumachine") {
		t.Fatalf("a build without the replace directive: %v\n%s", err, out)
	}

	// With it, as the README says.
	run(consumer, goBin, "mod", "edit", "-replace=qemu-machine.invalid/qemumachine="+here)
	run(consumer, goBin, "build", "-o", filepath.Join(work, "with-replace"), ".")
	if got := run(work, filepath.Join(work, "with-replace")); got != want {
		t.Fatalf("the program built with the replace directive printed %q", got)
	}

	// With an rpath to the library's directory, the program runs without LD_LIBRARY_PATH.
	if !linkedStatically {
		libdir, err := exec.Command("pkg-config", "--variable=libdir", "qemumachine").Output()
		if err != nil {
			t.Fatal(err)
		}
		build := exec.Command(goBin, "build", "-o", filepath.Join(work, "with-rpath"), ".")
		build.Dir = consumer
		build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=", "GOWORK=off",
			"CGO_LDFLAGS=-Wl,-rpath,"+strings.TrimSpace(string(libdir)))
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build with an rpath: %v\n%s", err, out)
		}
		prog := exec.Command(filepath.Join(work, "with-rpath"))
		prog.Env = withoutEnv(os.Environ(), "LD_LIBRARY_PATH")
		if out, err := prog.CombinedOutput(); err != nil || string(out) != want {
			t.Fatalf("the program with an rpath, without LD_LIBRARY_PATH: %v\n%s", err, out)
		}
	}

	// Vendored, from a copy of the module that is then removed.
	copyDir := filepath.Join(work, "qemumachine-copy")
	copyModule(t, here, copyDir)
	run(consumer, goBin, "mod", "edit", "-replace=qemu-machine.invalid/qemumachine="+copyDir)
	run(consumer, goBin, "mod", "vendor")
	if _, err := os.Stat(filepath.Join(consumer, "vendor", "qemu-machine.invalid", "qemumachine", "machine.go")); err != nil {
		t.Fatalf("go mod vendor: %v", err)
	}
	must(t, os.RemoveAll(copyDir))
	run(consumer, goBin, "build", "-mod=vendor", "-o", filepath.Join(work, "vendored"), ".")
	if got := run(work, filepath.Join(work, "vendored")); got != want {
		t.Fatalf("the vendored program printed %q", got)
	}
}

// copyModule copies the module's files (not its tests or testdata) to dst.
func copyModule(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.MkdirAll(dst, 0o755))
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasSuffix(name, "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(dst, name), b, 0o644))
	}
}

// withoutEnv is env without the variable name.
func withoutEnv(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// The Go block of README.md is made of lines of testdata/consumer/main.go, the program
// TestUseFromAnotherModule builds and runs (comments after the code aside).
func TestReadmeExampleIsTheConsumer(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(readme, []byte("```go\n"))
	if start < 0 {
		t.Fatal("README.md has no Go block")
	}
	block := readme[start+len("```go\n"):]
	block = block[:bytes.Index(block, []byte("```"))]
	program, err := os.ReadFile(filepath.Join("testdata", "consumer", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(program), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, l := range strings.Split(string(block), "\n") {
		code := l
		if i := strings.Index(code, "// "); i >= 0 && !strings.Contains(code[:i], "`") {
			code = code[:i]
		}
		if code = strings.TrimSpace(code); code != "" && !lines[code] {
			t.Errorf("README line %q is not in testdata/consumer/main.go", code)
		}
	}
}
