// Command kube is one multi-call binary for Racetrack's single-node cluster: the control plane
// (kube-apiserver, kube-controller-manager, kube-scheduler), the kubelet and kubectl, built from
// the k8s.io/kubernetes release that go.mod pins. It runs the component named by the basename it
// was invoked as (a symlink kube-apiserver -> kube) or, failing that, by its first argument:
//
//	kube kube-apiserver --etcd-servers=...   (or: kube apiserver ...)
//	kube kubectl get nodes                   (or: kube ctl get nodes)
//	kube cri-ready unix:///run/containerd/containerd.sock
//	kube version
//
// cri-ready asks a container runtime's CRI server for its version, as the kubelet does once at
// start: containerd lists its CRI plugin as loaded before that server is initialized, and a
// kubelet started in between exits ("server is not initialized yet").
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // for timeZone support in CronJob

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // client auth plugins, as kubectl has them
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/component-base/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Each component is built only when it is the one asked for: their commands register flags.
var components = map[string]func() *cobra.Command{
	"kube-apiserver":          func() *cobra.Command { return apiserver.NewAPIServerCommand() },
	"kube-controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand() },
	"kubectl":                 nil, // kubectl has its own error printing, see runKubectl
	"cri-ready":               nil, // not a cobra command, see criReady
}

func lookup(name string) (string, bool) {
	name = strings.TrimSuffix(filepath.Base(name), ".exe")
	if _, ok := components[name]; ok {
		return name, true
	}
	// short aliases: apiserver, controller-manager, scheduler, ctl
	for _, full := range []string{"kube-" + name, "kube" + name} {
		if _, ok := components[full]; ok {
			return full, true
		}
	}
	return "", false
}

func usage() {
	names := make([]string, 0, len(components))
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s COMPONENT [flags]\n  components: %s, version\n",
		filepath.Base(os.Args[0]), strings.Join(names, ", "))
}

func runKubectl() int {
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err) // prints the error and exits non-zero
		return 1
	}
	return 0
}

// criReady exits 0 when the CRI server at the endpoint answers Version, 1 (with the error on
// stderr) when it does not answer within 5 seconds or answers with an error.
func criReady(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: cri-ready ENDPOINT (unix:///path/to/socket)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-ready: %s: %v\n", args[0], err)
		return 1
	}
	defer conn.Close()
	reply, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-ready: %s: %v\n", args[0], err)
		return 1
	}
	fmt.Printf("%s %s (CRI %s)\n", reply.RuntimeName, reply.RuntimeVersion, reply.RuntimeApiVersion)
	return 0
}

func main() {
	name, ok := lookup(os.Args[0])
	if !ok {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		if os.Args[1] == "version" || os.Args[1] == "--version" {
			fmt.Println(version.Get().GitVersion)
			return
		}
		if name, ok = lookup(os.Args[1]); !ok {
			fmt.Fprintf(os.Stderr, "unknown component %q\n", os.Args[1])
			usage()
			os.Exit(2)
		}
		// the component sees its own name as argv[0] and its flags after it
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	if name == "kubectl" {
		os.Exit(runKubectl())
	}
	if name == "cri-ready" {
		os.Exit(criReady(os.Args[1:]))
	}
	os.Exit(cli.Run(components[name]()))
}
