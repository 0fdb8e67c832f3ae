package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

func init() { syncCommandFactories = append(syncCommandFactories, newSyncStatsCmd) }

// syncStatus mirrors the agent's answer; counters stay generic so that the
// CLI prints whatever the daemon counts.
type syncStatus struct {
	Role      string         `json:"role"`
	Interface string         `json:"interface"`
	Warm      bool           `json:"warm"`
	Resync    string         `json:"resync"`
	Conns     int            `json:"connections"`
	Templates int            `json:"templates"`
	Error     string         `json:"error"`
	Stats     map[string]any `json:"stats"`
}

var newSyncStatsCmd = newShowCmd("stats", "Show the connection sync daemon's role, warmth, table size and counters", "/v1/sync",
	func(w io.Writer, st syncStatus) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "role\t%s\n", st.Role)
		if st.Interface != "" {
			fmt.Fprintf(tw, "interface\t%s\n", st.Interface)
		}
		fmt.Fprintf(tw, "warm\t%s\n", yesNo(st.Warm))
		if st.Resync != "" {
			fmt.Fprintf(tw, "resync from\t%s\n", st.Resync)
		}
		fmt.Fprintf(tw, "table\t%d connections, %d templates\n", st.Conns, st.Templates)
		if st.Error != "" {
			fmt.Fprintf(tw, "ERROR\t%s\n", st.Error)
		}
		keys := make([]string, 0, len(st.Stats))
		for k := range st.Stats {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch v := st.Stats[k].(type) {
			case float64:
				if v != 0 {
					fmt.Fprintf(tw, "%s\t%.0f\n", k, v)
				}
			case map[string]any:
				for sk, sv := range v {
					fmt.Fprintf(tw, "%s[%s]\t%v\n", k, sk, sv)
				}
			case bool:
				fmt.Fprintf(tw, "%s\t%v\n", k, v)
			}
		}
		return tw.Flush()
	})
