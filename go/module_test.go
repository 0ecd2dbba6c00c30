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
	goMod := "module example.com/consumer\n\ngo 1.19\n\nrequire qemu-machine.invalid/qemumachine v0.1.0\n"
	want := "status: running\nQMP error class: CommandNotFound\nexit code: 0 <nil>\n"

	// Without a replace directive: the build fails.
	must(t, os.WriteFile(filepath.Join(consumer, "go.mod"), []byte(goMod), 0o644))
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(work, "never"), ".")
	cmd.Dir = consumer
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "qemu-machine.invalid/qemumachine") {
		t.Fatalf("a build without the replace directive: %v\n%s", err, out)
	}

	// With it.
	must(t, os.WriteFile(filepath.Join(consumer, "go.mod"),
		[]byte(goMod+"\nreplace qemu-machine.invalid/qemumachine => "+here+"\n"), 0o644))
	run(consumer, goBin, "build", "-o", filepath.Join(work, "with-replace"), ".")
	if got := run(work, filepath.Join(work, "with-replace")); got != want {
		t.Fatalf("the program built with the replace directive printed %q", got)
	}

	// Vendored, from a copy of the module that is then removed.
	copyDir := filepath.Join(work, "qemumachine-copy")
	copyModule(t, here, copyDir)
	must(t, os.WriteFile(filepath.Join(consumer, "go.mod"),
		[]byte(goMod+"\nreplace qemu-machine.invalid/qemumachine => "+copyDir+"\n"), 0o644))
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
