package injection

// acMatcher is an Aho-Corasick automaton compiled to a dense DFA over byte
// classes (bytes that occur in no pattern share class 0). Scan reports,
// for every pattern occurrence, the end offset under the pattern's group
// bits; the rules use it to find in one pass where their needed words
// occur.
type acMatcher struct {
	class  [256]uint8
	nclass int
	delta  []int32  // state*nclass + class -> state
	out    []uint32 // state -> union of group bits of patterns ending here
}

func newAC(patterns []string, groups []uint32) *acMatcher {
	m := &acMatcher{}
	for _, p := range patterns {
		for i := 0; i < len(p); i++ {
			if m.class[p[i]] == 0 {
				m.nclass++
				m.class[p[i]] = uint8(m.nclass)
			}
		}
	}
	m.nclass++ // class 0 included
	nc := m.nclass
	// Trie.
	gotoT := [][]int32{make([]int32, nc)}
	out := []uint32{0}
	for i := range gotoT[0] {
		gotoT[0][i] = -1
	}
	for k, p := range patterns {
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := m.class[p[i]]
			if gotoT[s][c] < 0 {
				gotoT = append(gotoT, make([]int32, nc))
				for j := range gotoT[len(gotoT)-1] {
					gotoT[len(gotoT)-1][j] = -1
				}
				out = append(out, 0)
				gotoT[s][c] = int32(len(gotoT) - 1)
			}
			s = gotoT[s][c]
		}
		out[s] |= groups[k]
	}
	// BFS over the trie fills failure transitions into a full DFA.
	m.delta = make([]int32, len(gotoT)*nc)
	fail := make([]int32, len(gotoT))
	var queue []int32
	for c := 0; c < nc; c++ {
		if t := gotoT[0][c]; t > 0 {
			m.delta[c] = t
			fail[t] = 0
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		out[s] |= out[fail[s]]
		for c := 0; c < nc; c++ {
			if t := gotoT[s][c]; t > 0 {
				m.delta[int(s)*nc+c] = t
				fail[t] = m.delta[int(fail[s])*nc+c]
				queue = append(queue, t)
			} else {
				m.delta[int(s)*nc+c] = m.delta[int(fail[s])*nc+c]
			}
		}
	}
	m.out = out
	return m
}

// scan calls fn(group bits, end offset) for each position where at least
// one pattern ends.
func (m *acMatcher) scan(s string, fn func(bits uint32, end int)) {
	nc := m.nclass
	st := int32(0)
	for i := 0; i < len(s); i++ {
		st = m.delta[int(st)*nc+int(m.class[s[i]])]
		if b := m.out[st]; b != 0 {
			fn(b, i+1)
		}
	}
}
