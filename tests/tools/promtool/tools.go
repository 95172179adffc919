// The promtool build: this module pins github.com/prometheus/prometheus (go.mod,
// go.sum); the xtask builds its cmd/promtool for the alert-rule tests.

//go:build tools

package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
