// Package meminfo reads the host's memory figures from /proc/meminfo.
package meminfo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// path is the file read; tests point it elsewhere.
var path = "/proc/meminfo"

// Field returns the /proc/meminfo field key ("MemTotal", "MemAvailable",
// ...) in bytes.
func Field(key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", path, key, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// Available returns MemAvailable in bytes: what can be allocated without
// swapping, page cache included.
func Available() (int64, error) { return Field("MemAvailable") }
