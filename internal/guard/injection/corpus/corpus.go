// Package corpus holds training data written for this repository (as
// opposed to the public data in the data/ folder), embedded so the trainer and
// its tests read the same bytes from any working directory.
//
// declaw_benign_requests.yaml is a hand-written list of ordinary benign
// user requests (imperative and question form: coding, cooking, writing,
// travel, study, home, "give instructions for ...", "provide a list of
// ...", "write a story about ..."), including benign uses of words that
// attacks also use. Nothing in it is copied or derived from data/.
package corpus

import (
	"embed"
	"io/fs"
)

//go:embed *.yaml
var files embed.FS

// Prefix marks a training file name that refers to this package rather
// than to the -data directory ("corpus/declaw_benign_requests.yaml").
const Prefix = "corpus/"

// ReadFile returns the embedded file name (without Prefix).
func ReadFile(name string) ([]byte, error) { return fs.ReadFile(files, name) }

// Has reports whether name (a base name, without Prefix) is a file of
// this package.
func Has(name string) bool {
	_, err := fs.Stat(files, name)
	return err == nil
}
