package pii

import "regexp"

// Best-effort recognisers. Names and street addresses have no checksum, so
// these are trigger-phrase and shape patterns with modest scores; they run
// only when asked for.
var (
	nameRe = regexp.MustCompile(`(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam)\.?|\b(?:[Mm]y name is|[Nn]ame:|[Nn]amed|[Cc]alled|[Dd]ear|[Ss]incerely,?|[Rr]egards,?|[Tt]hanks,|[Ff]rom:|[Cc]ontact:?|[Aa]ttn:?))[ \t\n]+(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?[ \t]+)?(\p{Lu}[\p{Ll}'\-]+(?:[ \t]+(?:\p{Lu}\.?[ \t]+)?\p{Lu}[\p{Ll}'\-]+){0,2})`)
	// Honorific-free "First Last" pairs are left alone: too many false
	// positives in prose (place names, titles, sentence starts).
	addrRe = regexp.MustCompile(`\b\d{1,6}[ \t]+(?:\p{Lu}[\p{L}'.\-]*[ \t]+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Square|Sq|Terrace|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Alley|Row|Close|Crescent|Gardens|Plaza|Strasse|Straße|Weg|Allee|Rue|Via|Calle|Katu|Gatan|Vej)\b\.?(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Flat|#)\.?[ \t]*[\w\-]+)?`)
)

func (st *scanState) scanNames() {
	for _, m := range nameRe.FindAllStringSubmatchIndex(st.text, -1) {
		st.add(Span{Type: PersonName, Start: m[2], End: m[3], Score: 0.6})
	}
}

func (st *scanState) scanAddresses() {
	for _, m := range addrRe.FindAllStringIndex(st.text, -1) {
		st.add(Span{Type: Address, Start: m[0], End: m[1], Score: 0.6})
	}
}
