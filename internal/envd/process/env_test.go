package process

import (
	"errors"
	"slices"
	"testing"

	"github.com/declaw/declaw/internal/envd/sysuser"
)

func TestBuildEnv(t *testing.T) {
	u := &sysuser.User{Name: "user", Uid: 1000, Gid: 1000, Home: "/home/user", Shell: "/bin/bash"}
	defaults := []string{
		"HOME=/home/user", "LANG=C.UTF-8", "LOGNAME=user", "PATH=" + DefaultPath,
		"PWD=/work", "SHELL=/bin/bash", "USER=user",
	}
	tests := []struct {
		name             string
		sandbox, request map[string]string
		want             []string
		wantErr          bool
	}{
		{name: "defaults", want: defaults},
		{
			name:    "sandbox adds and overrides",
			sandbox: map[string]string{"A": "1", "LANG": "en_US.UTF-8"},
			want: []string{"A=1", "HOME=/home/user", "LANG=en_US.UTF-8", "LOGNAME=user",
				"PATH=" + DefaultPath, "PWD=/work", "SHELL=/bin/bash", "USER=user"},
		},
		{
			name:    "request beats sandbox",
			sandbox: map[string]string{"A": "1", "B": "2"},
			request: map[string]string{"A": "req", "PATH": "/opt/bin"},
			want: []string{"A=req", "B=2", "HOME=/home/user", "LANG=C.UTF-8", "LOGNAME=user",
				"PATH=/opt/bin", "PWD=/work", "SHELL=/bin/bash", "USER=user"},
		},
		{name: "empty name", request: map[string]string{"": "x"}, wantErr: true},
		{name: "name with =", sandbox: map[string]string{"A=B": "x"}, wantErr: true},
		{name: "NUL in value", request: map[string]string{"A": "x\x00y"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BuildEnv(u, "/work", tt.sandbox, tt.request)
			if tt.wantErr {
				if !errors.Is(err, ErrBadRequest) {
					t.Fatalf("BuildEnv() error = %v, want ErrBadRequest", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("BuildEnv() error = %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("BuildEnv() = %q, want %q", got, tt.want)
			}
		})
	}
}
