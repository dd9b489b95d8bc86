// Command train fits the prompt-injection model from labelled YAML files
// and writes the weights that package injection embeds.
//
//	go run ./internal/guard/injection/cmd/train \
//	    -data data -out internal/guard/injection/model.bin
//
// It also reports 5-fold out-of-fold TPR/FPR on the training files, which
// is what the sensitivity thresholds were chosen from.
package main

import (
	"os"

	"github.com/declaw/declaw/internal/guard/guardcmd"
)

func main() {
	os.Exit(guardcmd.Run(append([]string{"train"}, os.Args[1:]...), os.Stdin, os.Stdout, os.Stderr))
}
