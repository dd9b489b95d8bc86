package injection

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// The linear model: hashed, lower-cased character n-grams (NGramMin to
// NGramMax bytes) of the normalised text, each weighted
// (RefCount/number of n-grams)^Norm, a dot product with the weights plus a
// bias, then the logistic function. Weights are stored as int8 with one
// float32 scale. Text longer than a window is scored window by window
// (window bytes every stride bytes) and the maximum wins: the windows are
// sized like the training texts (99% are under 400 bytes), because the
// 1/sqrt(n) normalisation lets scores drift upwards on much longer text.

// Feature hashing parameters; the trainer and the scorer must agree.
const (
	HashBits = 18
	NGramMin = 3
	NGramMax = 5
	// RefCount is the n-gram count at which a feature weighs 1.
	RefCount = 100
)

// Model is a trained linear classifier.
type Model struct {
	Bias  float32
	Scale float32
	// Norm is the length-normalisation exponent (0.5 or 1).
	Norm float32
	// TailScale is the scale of the upper tail of the model's logit on
	// benign training texts ((q99 - q90) / ln 10, measured by Train). The
	// maximum over n windows of benign text grows by about TailScale*ln(n)
	// logits; MaxProb subtracts that, so model-only scores do not grow
	// with the length of the text.
	TailScale float32
	Weights   []int8 // len 1<<HashBits
	// TrainedOn names the data files the weights were fitted on.
	TrainedOn []string
}

const modelMagic = "DCLWINJ3"

//go:embed model.bin
var embeddedModel []byte

// Embedded returns the model shipped with the binary.
func Embedded() (*Model, error) { return DecodeModel(embeddedModel) }

// Encode serialises m.
func (m *Model) Encode() []byte {
	var b bytes.Buffer
	b.WriteString(modelMagic)
	binary.Write(&b, binary.LittleEndian, uint32(HashBits))
	binary.Write(&b, binary.LittleEndian, m.Bias)
	binary.Write(&b, binary.LittleEndian, m.Scale)
	binary.Write(&b, binary.LittleEndian, m.Norm)
	binary.Write(&b, binary.LittleEndian, m.TailScale)
	binary.Write(&b, binary.LittleEndian, uint16(len(m.TrainedOn)))
	for _, f := range m.TrainedOn {
		binary.Write(&b, binary.LittleEndian, uint16(len(f)))
		b.WriteString(f)
	}
	for _, w := range m.Weights {
		b.WriteByte(byte(w))
	}
	return b.Bytes()
}

// ErrBadModel reports an undecodable model file.
var ErrBadModel = errors.New("injection: bad model file")

// DecodeModel parses a model produced by Encode.
func DecodeModel(data []byte) (*Model, error) {
	r := bytes.NewReader(data)
	magic := make([]byte, len(modelMagic))
	if _, err := r.Read(magic); err != nil || string(magic) != modelMagic {
		return nil, ErrBadModel
	}
	var bits uint32
	var nf uint16
	m := &Model{}
	if err := binary.Read(r, binary.LittleEndian, &bits); err != nil || bits != HashBits {
		return nil, fmt.Errorf("%w: hash bits %d", ErrBadModel, bits)
	}
	if binary.Read(r, binary.LittleEndian, &m.Bias) != nil || binary.Read(r, binary.LittleEndian, &m.Scale) != nil ||
		binary.Read(r, binary.LittleEndian, &m.Norm) != nil || binary.Read(r, binary.LittleEndian, &m.TailScale) != nil ||
		binary.Read(r, binary.LittleEndian, &nf) != nil {
		return nil, ErrBadModel
	}
	for i := 0; i < int(nf); i++ {
		var l uint16
		if binary.Read(r, binary.LittleEndian, &l) != nil {
			return nil, ErrBadModel
		}
		s := make([]byte, l)
		if _, err := r.Read(s); err != nil {
			return nil, ErrBadModel
		}
		m.TrainedOn = append(m.TrainedOn, string(s))
	}
	if r.Len() != 1<<HashBits {
		return nil, fmt.Errorf("%w: %d weights", ErrBadModel, r.Len())
	}
	m.Weights = make([]int8, 1<<HashBits)
	for i := range m.Weights {
		c, _ := r.ReadByte()
		m.Weights[i] = int8(c)
	}
	return m, nil
}

// lowerASCII folds ASCII letters; other bytes are left alone (the text is
// already NFKC-normalised).
func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Features calls fn with the hash bucket of every feature of s, in order
// of the feature's end position (the trainer uses the same function;
// Windows inlines it). Runs of whitespace count as one space and the text
// is padded with a space at both ends. Two feature families share the
// buckets:
//   - character n-grams (NGramMin to NGramMax bytes): a multiplicative hash
//     of the n-gram's bytes packed into an integer, tagged with n;
//   - word unigrams and bigrams: a word is a run of ASCII letters and
//     digits or non-ASCII bytes; each word end emits the word's hash and,
//     after the first word, the hash of the pair (previous word, word).
func Features(s string, fn func(end int, h uint32)) {
	var v uint64 // the last bytes, newest in the low byte
	filled := 0
	var wh, prev uint64 = wordSeed, 0
	inWord := false
	emit := func(pos int, c byte) {
		if wordChar[c] {
			wh = (wh ^ uint64(c)) * wordMul
			inWord = true
		} else if inWord {
			fn(pos, wordBucket(wh))
			if prev != 0 {
				fn(pos, pairBucket(prev, wh))
			}
			prev, wh, inWord = wh, wordSeed, false
		}
		v = v<<8 | uint64(c)
		filled++
		for n := NGramMin; n <= NGramMax && n <= filled; n++ {
			x := v&(1<<(8*uint(n))-1) | uint64(n)<<56
			fn(pos, uint32((x*0x9E3779B97F4A7C15)>>(64-HashBits)))
		}
	}
	emit(0, ' ')
	space := true
	for i := 0; i < len(s); i++ {
		c := lowerASCII(s[i])
		if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
			if space {
				continue
			}
			c = ' '
			space = true
		} else {
			space = false
		}
		emit(i, c)
	}
	if !space {
		emit(len(s), ' ')
	}
}

// Word-feature hashing (see Features).
const (
	wordSeed = 0xcbf29ce484222325 // FNV-1a offset basis
	wordMul  = 0x100000001b3      // FNV-1a prime
)

// wordChar marks the bytes words are made of (lower-case ASCII letters,
// digits, and every non-ASCII byte, so UTF-8 words stay whole).
var wordChar = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c >= 0x80
	}
	return t
}()

func wordBucket(wh uint64) uint32 {
	return uint32(((wh ^ 0x5bd1e995) * 0x9E3779B97F4A7C15) >> (64 - HashBits))
}

func pairBucket(prev, wh uint64) uint32 {
	return uint32(((prev*0xff51afd7ed558ccd ^ wh) * 0xc4ceb9fe1a85ec53) >> (64 - HashBits))
}

// window and stride of the model's sliding windows over long text (see
// the Model comment).
const (
	window = 256
	stride = 128
)

// Prob returns the model's probability that s is an injection: the
// maximum over windows of `window` bytes taken every `stride` bytes. It
// walks the text once, summing weights per stride-sized block; a window is
// two adjacent blocks.
func (m *Model) Prob(s string) float64 {
	best := 0.0
	for _, p := range m.Windows(s) {
		best = max(best, p)
	}
	return best
}

// Windows returns the model's probability for each window of s: window k
// covers bytes [k*stride, k*stride+window). Text of at most one window
// gets one probability. WindowsAt maps a byte offset to its windows.
func (m *Model) Windows(s string) []float64 {
	if m == nil || len(m.Weights) == 0 {
		return []float64{0}
	}
	nb := len(s)/stride + 1
	var small, smallc [3]int32
	var sums, cnts []int32
	if nb <= len(small) {
		sums, cnts = small[:nb], smallc[:nb]
	} else {
		sums, cnts = make([]int32, nb), make([]int32, nb)
	}
	w := m.Weights[:1<<HashBits]
	// v holds the last bytes (newest lowest); n-grams of 3, 4 and 5 bytes
	// end at every position once at least that many bytes were seen. wh is
	// the hash of the current word, prev of the word before.
	v := uint64(' ')
	filled := 1
	space := true
	var wh, prev uint64 = wordSeed, 0
	inWord := false
	for i := 0; i <= len(s); i++ {
		var c byte
		if i == len(s) {
			if space {
				break
			}
			c = ' '
		} else {
			c = lowerASCII(s[i])
			if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
				if space {
					continue
				}
				c = ' '
				space = true
			} else {
				space = false
			}
		}
		b := i / stride
		if wordChar[c] {
			wh = (wh ^ uint64(c)) * wordMul
			inWord = true
		} else if inWord {
			sums[b] += int32(w[wordBucket(wh)])
			cnts[b]++
			if prev != 0 {
				sums[b] += int32(w[pairBucket(prev, wh)])
				cnts[b]++
			}
			prev, wh, inWord = wh, wordSeed, false
		}
		v = v<<8 | uint64(c)
		filled++
		if filled >= 5 {
			sums[b] += int32(w[((v&0xffffff|3<<56)*0x9E3779B97F4A7C15)>>(64-HashBits)]) +
				int32(w[((v&0xffffffff|4<<56)*0x9E3779B97F4A7C15)>>(64-HashBits)]) +
				int32(w[((v&0xffffffffff|5<<56)*0x9E3779B97F4A7C15)>>(64-HashBits)])
			cnts[b] += 3
			continue
		}
		for n := NGramMin; n <= filled; n++ {
			x := v&(1<<(8*uint(n))-1) | uint64(n)<<56
			sums[b] += int32(w[(x*0x9E3779B97F4A7C15)>>(64-HashBits)])
			cnts[b]++
		}
	}
	if nb <= window/stride {
		var sum, cnt int32
		for k := range sums {
			sum += sums[k]
			cnt += cnts[k]
		}
		return []float64{m.logit(float64(sum), int(cnt))}
	}
	out := make([]float64, nb-1)
	for k := range out {
		out[k] = m.logit(float64(sums[k]+sums[k+1]), int(cnts[k]+cnts[k+1]))
	}
	return out
}

// MaxProb is the length-corrected maximum of window probabilities ws (as
// returned by Windows): the logit of the largest is lowered by
// TailScale*ln(len(ws)), the growth expected of the maximum of that many
// benign windows. One window (text up to 256 bytes) is not corrected.
func (m *Model) MaxProb(ws []float64) float64 {
	best := 0.0
	for _, p := range ws {
		best = max(best, p)
	}
	if m == nil || len(ws) <= 1 || m.TailScale <= 0 || best <= 0 || best >= 1 {
		return best
	}
	z := math.Log(best/(1-best)) - float64(m.TailScale)*math.Log(float64(len(ws)))
	return sigmoid(z)
}

// WindowsAt returns the range [lo, hi) of indices into Windows(s) (of n
// windows) whose window contains byte offset p.
func WindowsAt(p, n int) (lo, hi int) {
	if n <= 1 {
		return 0, n
	}
	b := p / stride
	lo, hi = max(0, b-1), min(n, b+1)
	if lo >= hi { // p in the last, partial block
		lo, hi = n-1, n
	}
	return lo, hi
}

func (m *Model) logit(sum float64, cnt int) float64 {
	if cnt == 0 {
		return sigmoid(float64(m.Bias))
	}
	z := float64(m.Bias) + float64(m.Scale)*sum*FeatureValue(cnt, float64(m.Norm))
	return sigmoid(z)
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// FeatureValue is the value of each n-gram in a text of cnt n-grams.
func FeatureValue(cnt int, norm float64) float64 {
	return math.Pow(RefCount/float64(max(1, cnt)), norm)
}

// Quantize converts float weights to a Model.
func Quantize(w []float32, bias, norm float32, trainedOn []string) *Model {
	maxAbs := float32(0)
	for _, x := range w {
		if a := float32(math.Abs(float64(x))); a > maxAbs {
			maxAbs = a
		}
	}
	scale := maxAbs / 127
	if scale == 0 {
		scale = 1
	}
	q := make([]int8, len(w))
	for i, x := range w {
		v := math.Round(float64(x / scale))
		q[i] = int8(max(-127, min(127, v)))
	}
	return &Model{Bias: bias, Scale: scale, Norm: norm, Weights: q, TrainedOn: append([]string(nil), trainedOn...)}
}

// SetTailScale measures TailScale on benign texts: (q99 - q90) / ln 10 of
// the model's logits, the slope of the upper tail per unit of ln(n).
func (m *Model) SetTailScale(benign []string) {
	m.TailScale = 0
	if len(benign) < 20 {
		return
	}
	zs := make([]float64, 0, len(benign))
	for _, s := range benign {
		p := min(max(m.Prob(s), 1e-9), 1-1e-9)
		zs = append(zs, math.Log(p/(1-p)))
	}
	slices.Sort(zs)
	q := func(f float64) float64 { return zs[min(len(zs)-1, int(f*float64(len(zs))))] }
	m.TailScale = float32(max(0, (q(0.99)-q(0.90))/math.Ln10))
}

// String describes the model briefly.
func (m *Model) String() string {
	if m == nil || len(m.Weights) == 0 {
		return "no model (rules only)"
	}
	return fmt.Sprintf("linear char %d-%d-grams + word 1-2-grams, 2^%d buckets, length norm ^%.2f, tail scale %.3f, trained on %s", NGramMin, NGramMax, HashBits, m.Norm, m.TailScale, strings.Join(m.TrainedOn, ", "))
}
