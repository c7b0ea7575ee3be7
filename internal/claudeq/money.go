package claudeq

import (
	"fmt"
	"strconv"
	"strings"
)

// Micros is an amount of money in micro-dollars: 1 USD = 1,000,000
// Micros. Prices, costs, reservations and budgets are all Micros: integer,
// so that no amount is ever rounded twice.
type Micros int64

// USD is one dollar in Micros.
const USD Micros = 1_000_000

// String formats m as dollars with at least two and at most six decimals,
// e.g. "$1.25", "$0.000125", "-$0.50".
func (m Micros) String() string {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = uint64(-m)
	}
	frac := strings.TrimRight(fmt.Sprintf("%06d", u%1_000_000), "0")
	for len(frac) < 2 {
		frac += "0"
	}
	s := "$" + strconv.FormatUint(u/1_000_000, 10) + "." + frac
	if neg {
		s = "-" + s
	}
	return s
}
