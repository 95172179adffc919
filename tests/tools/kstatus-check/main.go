// kstatus-check: reads Kubernetes objects (a JSON list on stdin) and prints,
// per object, the status that sigs.k8s.io/cli-utils' kstatus computes for it
// (what Flux's health checks use): "<kind>/<name> <Status> <message>".
package main

import (
	"fmt"
	"io"
	"os"

	utiljson "k8s.io/apimachinery/pkg/util/json"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check: cannot read stdin:", err)
		os.Exit(2)
	}
	// Numbers as int64 where they are integers, as the API machinery expects.
	var items []map[string]interface{}
	if err := utiljson.Unmarshal(data, &items); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check: stdin is not a JSON list of objects:", err)
		os.Exit(2)
	}
	for _, o := range items {
		u := &unstructured.Unstructured{Object: o}
		r, err := status.Compute(u)
		if err != nil {
			fmt.Printf("%s/%s Error %s\n", u.GetKind(), u.GetName(), err)
			continue
		}
		fmt.Printf("%s/%s %s %s\n", u.GetKind(), u.GetName(), r.Status, r.Message)
	}
}
