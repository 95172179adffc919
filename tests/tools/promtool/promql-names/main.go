// promql-names: the metric names each PromQL expression selects, as
// Prometheus' own parser reads them. One expression per stdin line; prints
// per line the names, space-separated, or "error: <why>" when it does not
// parse.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(in.Text())
		if err != nil {
			fmt.Printf("error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		names := map[string]bool{}
		for _, sel := range parser.ExtractSelectors(expr) {
			for _, m := range sel {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					names[m.Value] = true
				}
			}
		}
		var out []string
		for n := range names {
			out = append(out, n)
		}
		sort.Strings(out)
		fmt.Println(strings.Join(out, " "))
	}
}
