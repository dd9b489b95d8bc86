package build

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParseDockerfile(t *testing.T) {
	src := `ARG BASE=python
FROM base AS builder
ARG V=1
RUN echo build $V
FROM ${BASE}
ENV A=1 B="two words"
COPY --from=builder --chown=1000:1000 --chmod=0755 /out/ /app/
ADD a.txt b.txt /dst/
WORKDIR sub
USER user
EXPOSE 8080/tcp
ENTRYPOINT ["/bin/server", "--port", "8080"]
CMD ["--verbose"]
LABEL x=y
`
	p, err := ParseDockerfile([]byte(src))
	if err != nil {
		t.Fatalf("ParseDockerfile: %v", err)
	}
	if len(p.Stages) != 2 || p.Stages[0].Name != "builder" || p.Stages[0].Base != "base" || p.Stages[1].Base != "python" {
		t.Fatalf("stages: %+v", p.Stages)
	}
	st := p.Stages[1]
	kinds := []string{}
	for _, s := range st.Steps {
		kinds = append(kinds, s.Kind)
	}
	if got, want := strings.Join(kinds, " "), "ENV COPY COPY WORKDIR USER EXPOSE START START"; got != want {
		t.Errorf("steps = %s, want %s", got, want)
	}
	if env := st.Steps[0].Env; len(env) != 2 || env[1] != [2]string{"B", "two words"} {
		t.Errorf("ENV = %v", env)
	}
	cp := st.Steps[1].Copy
	if cp.From != "builder" || cp.Chown != "1000:1000" || cp.Mode == nil || *cp.Mode != 0o755 || cp.Dst != "/app/" {
		t.Errorf("COPY --from = %+v", cp)
	}
	if st.Steps[2].Line != 8 {
		t.Errorf("ADD line = %d, want 8", st.Steps[2].Line)
	}
	if e := st.Steps[6]; !e.Entrypoint || e.Cmd != "/bin/server --port 8080" {
		t.Errorf("ENTRYPOINT = %+v", e)
	}
	if run := p.Stages[0].Steps[1]; run.Kind != StepRun || run.Cmd != "echo build $V" {
		t.Errorf("RUN = %+v", run)
	}
}

func TestParseDockerfileErrors(t *testing.T) {
	for _, c := range []struct {
		src  string
		line int
		msg  string
	}{
		{"FROM base\nRUN true\nFROBNICATE x\n", 3, "unknown instruction"},
		{"RUN true\n", 1, ""},
		{"FROM base\nONBUILD RUN true\n", 2, "not supported"},
		{"FROM base\nRUN --mount=type=cache,target=/x true\n", 2, "not supported"},
		{"FROM base\nCOPY ../x /y\n", 2, "outside the build context"},
		{"FROM base\nCOPY --from=nope /x /y\n", 2, "no earlier stage"},
		{"FROM base\nADD https://example.com/x /y\n", 2, "URL"},
		{"FROM base\nCOPY a b /y\n", 2, "ending in /"},
	} {
		_, err := ParseDockerfile([]byte(c.src))
		var ie *InputError
		if !errors.As(err, &ie) {
			t.Errorf("ParseDockerfile(%q) = %v, want an InputError", c.src, err)
			continue
		}
		if ie.Line != c.line || !strings.Contains(ie.Msg, c.msg) {
			t.Errorf("ParseDockerfile(%q) = line %d %q, want line %d containing %q", c.src, ie.Line, ie.Msg, c.line, c.msg)
		}
	}
	big := "FROM base\n#" + strings.Repeat("x", MaxDockerfile)
	if _, err := ParseDockerfile([]byte(big)); err == nil {
		t.Errorf("a Dockerfile over %d bytes parsed", MaxDockerfile)
	}
}

func TestSpecPlan(t *testing.T) {
	mode := 0o755
	s := Spec{
		BaseImage: "python:3.12-slim", RunCmds: []string{"pip install x"}, Envs: map[string]string{"B": "2", "A": "1"},
		Packages: []string{"curl"}, Copies: []Copy{{Src: "app.py", Dst: "/app/", Mode: &mode}},
		StartCmd: "python app.py", ReadyCheck: &ReadyCheck{Port: 8000},
	}
	p, err := s.Plan()
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stages[0]
	var texts []string
	for _, s := range st.Steps {
		texts = append(texts, s.Text)
	}
	want := []string{
		"ENV A=1 B=2",
		"RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*",
		"RUN pip install x", "COPY --chmod=755 app.py /app/", "CMD python app.py", `READY {"port":8000}`,
	}
	if strings.Join(texts, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(texts, "\n"), strings.Join(want, "\n"))
	}
	for _, bad := range []Spec{
		{Packages: []string{"curl; rm -rf /"}},
		{Envs: map[string]string{"1X": "y"}},
		{Copies: []Copy{{Src: "../etc/passwd", Dst: "/x"}}},
		{ReadyCheck: &ReadyCheck{Port: 80}},
		{StartCmd: "x", ReadyCheck: &ReadyCheck{Port: 80, Cmd: "true"}},
	} {
		if _, err := bad.Plan(); err == nil {
			t.Errorf("Spec %+v planned, want an error", bad)
		}
	}
}

func TestSpecReadyCheckJSON(t *testing.T) {
	var s Spec
	if err := s.UnmarshalJSON([]byte(`{"start_cmd":"x","ready_check":"curl -f localhost"}`)); err != nil || s.ReadyCheck == nil || s.ReadyCheck.Cmd != "curl -f localhost" {
		t.Errorf("string ready_check: %+v %v", s.ReadyCheck, err)
	}
	if err := s.UnmarshalJSON([]byte(`{"start_cmd":"x","ready_check":{"port":80,"timeout":5}}`)); err != nil || s.ReadyCheck.Port != 80 || s.ReadyCheck.Timeout != 5 {
		t.Errorf("object ready_check: %+v %v", s.ReadyCheck, err)
	}
}

func TestSpecDockerfileWithStartCmd(t *testing.T) {
	p, err := Spec{Dockerfile: "FROM base\nENTRYPOINT [\"/x\"]\n", StartCmd: "serve", ReadyCheck: &ReadyCheck{Port: 80}}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	st := &stageState{}
	for _, step := range p.Stages[0].Steps {
		if step.Kind == StepStart || step.Kind == StepReady {
			if err := (&Builder{}).runStep(context.Background(), nil, st, step, "", nil, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st.entry != "" || st.start != "serve" || st.ready == nil || st.ready.Port != 80 {
		t.Errorf("start %q entry %q ready %+v, want the request's start command and ready check", st.start, st.entry, st.ready)
	}
}

func TestHealthcheckIsTheReadyCheck(t *testing.T) {
	p, err := ParseDockerfile([]byte("FROM base\nCMD [\"serve\"]\nHEALTHCHECK --interval=2s --retries=5 CMD curl -fs localhost:8080/\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := p.Stages[0].Steps[1]
	if r.Kind != StepReady || r.Ready == nil || r.Ready.Cmd != "curl -fs localhost:8080/" || r.Ready.Timeout != 10 {
		t.Errorf("HEALTHCHECK step = %+v ready %+v", r, r.Ready)
	}
}
