package guardtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The repository carries its own data: no file of it points at a
// directory beside the clone (the team's shared folder) or at the
// environment variable that once located it. CI also runs the whole
// suite from a clone with no sibling directories (.ci/run).
func TestNoPathOutsideRepository(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Spelled in pieces so this file does not match itself.
	forbidden := []string{".." + "/shared", "DECLAW_" + "SHARED_DIR", "shared" + "/data"}
	exts := map[string]bool{".go": true, ".sh": true, ".md": true, ".py": true, ".yaml": true, ".yml": true, ".txt": true, ".toml": true, "": true}
	var checked int
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			switch rel {
			case ".git", "bin", "data":
				// data/ holds the copied sets, whose own headers may name
				// their origin; they are read, never followed.
				return filepath.SkipDir
			}
			if d.Name() == "testdata" {
				// Test inputs (fuzz seeds, benign documents), not paths.
				return filepath.SkipDir
			}
			if strings.HasPrefix(d.Name(), ".") && rel != "." && d.Name() != ".ci" {
				return filepath.SkipDir
			}
			return nil
		}
		if !exts[filepath.Ext(p)] || filepath.Base(p) == "selfcontained_test.go" {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Size() > 4<<20 {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		checked++
		for _, f := range forbidden {
			if i := strings.Index(string(b), f); i >= 0 {
				line := 1 + strings.Count(string(b[:i]), "\n")
				t.Errorf("%s:%d refers to %q, outside the repository", rel, line, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Errorf("only %d files checked: the walk is broken", checked)
	}
}

func TestDataDir(t *testing.T) {
	d, err := DataDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"injection/opensource_deepset_attacks.yaml", "injection/more/l1_mixed.yaml", "pii/presidio_synth_dataset_v2.json", "injection/LICENSE-parapet", "pii/LICENSE-presidio-research", "README.md"} {
		if _, err := os.Stat(filepath.Join(d, f)); err != nil {
			t.Error(err)
		}
	}
}
