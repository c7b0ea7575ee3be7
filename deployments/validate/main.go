// Command validate checks deployments/ with the upstream schemas that can
// be had as Go modules, without a Docker engine or a cluster:
//
//   - compose.yaml through the Compose specification's own loader
//     (github.com/compose-spec/compose-go: JSON schema, interpolation,
//     merge keys, dependencies);
//   - kubernetes/*.yaml decoded strictly into k8s.io/api's types (unknown
//     fields and wrong types fail; like the API server's JSON decoding,
//     field names match case-insensitively). KEDA's CRDs and the
//     kustomization are listed as skipped.
//
// It is its own Go module so that claudeq's go.mod does not carry these
// dependencies. Run it from the repository root:
//
//	(cd deployments/validate && go run . ..)
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	bad := checkCompose(filepath.Join(dir, "compose.yaml"))
	bad += checkKubernetes(filepath.Join(dir, "kubernetes"))
	if bad > 0 {
		fmt.Printf("%d problem(s)\n", bad)
		os.Exit(1)
	}
	fmt.Println("all valid")
}

func checkCompose(path string) int {
	abs, err := filepath.Abs(path)
	if err != nil {
		fmt.Println("FAIL  ", path, err)
		return 1
	}
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)), cli.WithProfiles([]string{"tools"}))
	if err != nil {
		fmt.Println("FAIL  ", path, err)
		return 1
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Println("FAIL  ", path, err)
		return 1
	}
	fmt.Printf("OK     %s: %d services\n", filepath.Base(path), len(p.Services))
	return 0
}

func checkKubernetes(dir string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	bad := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Println("FAIL  ", f, err)
			bad++
			continue
		}
		dec := yamlv3.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var node yamlv3.Node
			if err := dec.Decode(&node); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				fmt.Printf("FAIL   %s#%d: %v\n", filepath.Base(f), i, err)
				bad++
				break
			}
			doc, err := yamlv3.Marshal(&node)
			if err != nil {
				fmt.Printf("FAIL   %s#%d: %v\n", filepath.Base(f), i, err)
				bad++
				continue
			}
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind == "" {
				fmt.Printf("FAIL   %s#%d: no apiVersion/kind\n", filepath.Base(f), i)
				bad++
				continue
			}
			var obj any
			switch meta.APIVersion + "/" + meta.Kind {
			case "apps/v1/Deployment":
				obj = &appsv1.Deployment{}
			case "v1/Service":
				obj = &corev1.Service{}
			case "v1/ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1/Secret":
				obj = &corev1.Secret{}
			case "v1/Namespace":
				obj = &corev1.Namespace{}
			case "policy/v1/PodDisruptionBudget":
				obj = &policyv1.PodDisruptionBudget{}
			case "autoscaling/v2/HorizontalPodAutoscaler":
				obj = &autoscalingv2.HorizontalPodAutoscaler{}
			default:
				fmt.Printf("SKIP   %s#%d %s %s (no typed schema)\n", filepath.Base(f), i, meta.APIVersion, meta.Kind)
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				fmt.Printf("FAIL   %s#%d %s: %v\n", filepath.Base(f), i, meta.Kind, err)
				bad++
				continue
			}
			fmt.Printf("OK     %s#%d %s\n", filepath.Base(f), i, meta.Kind)
		}
	}
	return bad
}
