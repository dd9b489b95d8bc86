package injection

import (
	"math/rand/v2"
	"strings"
)

// Example is one labelled training text.
type Example struct {
	Text      string
	Malicious bool
	// Weight scales the example's loss (0 means 1); the trainer uses it to
	// give each source file the same total weight within its class.
	Weight float64
}

// TrainConfig sets the optimiser. The zero value uses the defaults.
//
// The defaults were chosen by leave-one-source-out evaluation (`declaw
// guard eval --loso`): macro TPR at the medium preset it implies was
// 0.703 at learning rate 0.001, 0.692 at 0.0005, 0.694 at 0.002, 0.705
// at 0.001 with 40 epochs, and 0.671 with norm 0.5 (docs/guard.md).
type TrainConfig struct {
	Epochs       int     // default 20
	LearningRate float64 // default 0.001, decayed as lr/(1+0.2*epoch)
	L2           float64 // default 1e-4
	Seed         uint64  // shuffling seed; default 1
	// Norm is the length-normalisation exponent; default 0.75
	// (features weigh (RefCount/n)^0.75).
	Norm float64
}

// Train fits the linear model by stochastic gradient descent on the
// logistic loss with balanced class weights. It is deterministic for a
// given input order and seed. trainedOn is recorded in the model.
func Train(examples []Example, cfg TrainConfig, trainedOn []string) *Model {
	if cfg.Epochs == 0 {
		cfg.Epochs = 20
	}
	if cfg.LearningRate == 0 {
		cfg.LearningRate = 0.001
	}
	if cfg.L2 == 0 {
		cfg.L2 = 1e-4
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Norm == 0 {
		cfg.Norm = 0.75
	}
	type vec struct {
		h []uint32
		v float32
		y float64
		c float64 // class weight
	}
	pos := 0
	for _, e := range examples {
		if e.Malicious {
			pos++
		}
	}
	neg := len(examples) - pos
	vecs := make([]vec, len(examples))
	for i, e := range examples {
		var hs []uint32
		Features(strings.ToLower(Normalize(e.Text).Text), func(_ int, h uint32) { hs = append(hs, h) })
		x := vec{h: hs, v: float32(FeatureValue(len(hs), cfg.Norm))}
		if e.Malicious {
			x.y, x.c = 1, float64(len(examples))/float64(2*max(1, pos))
		} else {
			x.y, x.c = 0, float64(len(examples))/float64(2*max(1, neg))
		}
		if e.Weight > 0 {
			x.c *= e.Weight
		}
		vecs[i] = x
	}
	w := make([]float32, 1<<HashBits)
	var b float64
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	order := make([]int, len(vecs))
	for i := range order {
		order[i] = i
	}
	for ep := 0; ep < cfg.Epochs; ep++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		lr := cfg.LearningRate / (1 + 0.2*float64(ep))
		for _, k := range order {
			x := &vecs[k]
			z := b
			for _, h := range x.h {
				z += float64(w[h] * x.v)
			}
			g := (sigmoid(z) - x.y) * x.c
			gv := float32(lr * g * float64(x.v))
			decay := float32(1 - lr*cfg.L2)
			for _, h := range x.h {
				w[h] = w[h]*decay - gv
			}
			b -= lr * g
		}
	}
	m := Quantize(w, float32(b), float32(cfg.Norm), trainedOn)
	var benign []string
	for _, e := range examples {
		if !e.Malicious {
			benign = append(benign, strings.ToLower(Normalize(e.Text).Text))
		}
	}
	m.SetTailScale(benign)
	return m
}
