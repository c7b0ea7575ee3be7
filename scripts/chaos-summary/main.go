// Command chaos-summary prints the figures that the chaos tests wrote to a
// report file (CLAUDEQ_CHAOS_REPORT), one scenario after another.
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: chaos-summary REPORT.json")
		os.Exit(2)
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var r struct {
		Scale     string `json:"scale"`
		Race      bool   `json:"race"`
		At        string `json:"at"`
		CPUs      int    `json:"cpus"`
		Scenarios []struct {
			Test    string `json:"test"`
			Figures []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"figures"`
		} `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("scale %s, %d CPUs, race %v, at %s\n", r.Scale, r.CPUs, r.Race, r.At)
	for _, s := range r.Scenarios {
		fmt.Printf("\n%s\n", s.Test)
		for _, f := range s.Figures {
			fmt.Printf("  %s: %s\n", f.Name, f.Value)
		}
	}
}
