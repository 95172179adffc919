// argocd-health: Argo CD's own code judging craftplane's objects. It loads an
// argocd-cm ConfigMap (the file given as the argument) through Argo CD's
// settings manager, exactly as the application controller reads its
// resource.customizations, and evaluates each object of a JSON list on stdin
// with gitops-engine's health.GetResourceHealth and Argo CD's Lua VM
// (util/lua). Prints per object: "<kind>/<name> <Status> <message>".
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/health"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

const namespace = "argocd"

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "argocd-health: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: argocd-health ARGOCD-CM.yaml < objects.json")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(raw, &cm); err != nil {
		fail("%s is not a ConfigMap: %v", os.Args[1], err)
	}
	if cm.Name != "argocd-cm" {
		fail("%s: Argo CD reads the ConfigMap argocd-cm, not %q", os.Args[1], cm.Name)
	}
	cm.Namespace = namespace
	// The settings manager also needs Argo CD's Secret to exist.
	secret := &corev1.Secret{}
	secret.Name, secret.Namespace = "argocd-secret", namespace
	cm.Labels = map[string]string{"app.kubernetes.io/part-of": "argocd"}
	secret.Labels = map[string]string{"app.kubernetes.io/part-of": "argocd"}
	client := fake.NewClientset(&cm, secret)
	mgr := settings.NewSettingsManager(context.Background(), client, namespace)
	overrides, err := mgr.GetResourceOverrides()
	if err != nil {
		fail("Argo CD refuses the resource customizations: %v", err)
	}

	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("cannot read stdin: %v", err)
	}
	var items []map[string]any
	if err := utiljson.Unmarshal(data, &items); err != nil {
		fail("stdin is not a JSON list of objects: %v", err)
	}
	for _, o := range items {
		u := &unstructured.Unstructured{Object: o}
		h, err := health.GetResourceHealth(u, lua.ResourceHealthOverrides(overrides))
		switch {
		case err != nil:
			fmt.Printf("%s/%s Error %s\n", u.GetKind(), u.GetName(), err)
		case h == nil:
			fmt.Printf("%s/%s None no health check\n", u.GetKind(), u.GetName())
		default:
			fmt.Printf("%s/%s %s %s\n", u.GetKind(), u.GetName(), h.Status, h.Message)
		}
	}
}
