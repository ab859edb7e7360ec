// Command gowriter writes go-writer-vfio.json with the CDI Go library itself: the spec is built
// from the library's own types (specs-go) and written by the library's own writer
// (cdi.Cache.WriteSpec, which json.Marshal's a ".json" spec and renames it into place), so the
// file is what a Go program using the library writes, not anybody's idea of it.
//
// Built against Debian 12's golang-github-container-orchestrated-devices-container-device-interface-dev
// (library 0.5.2): see README.md. The spec is the newest this library writes: cdiVersion is its
// specs.CurrentVersion (0.5.0; it refuses 0.6.0 and later) and its ContainerEdits has no
// additionalGids (a 0.7.0 field).
//
// Usage: gowriter DIR    (writes DIR/go-writer-vfio.json and prints its path)
package main

import (
	"fmt"
	"os"

	"github.com/container-orchestrated-devices/container-device-interface/pkg/cdi"
	specs "github.com/container-orchestrated-devices/container-device-interface/specs-go"
)

const name = "go-writer-vfio.json"

func spec() *specs.Spec {
	rw := os.FileMode(0o666)
	return &specs.Spec{
		Version: specs.CurrentVersion,
		Kind:    "vendor.example/vfio",
		Devices: []specs.Device{
			{
				Name: "12",
				ContainerEdits: specs.ContainerEdits{
					DeviceNodes: []*specs.DeviceNode{{Path: "/dev/vfio/12", Type: "c", Permissions: "rw"}},
				},
			},
			{
				Name: "disk",
				ContainerEdits: specs.ContainerEdits{
					DeviceNodes: []*specs.DeviceNode{{Path: "/dev/xvdb", HostPath: "/dev/loop7"}},
				},
			},
		},
		ContainerEdits: specs.ContainerEdits{
			// "&" is one of the characters json.Marshal escapes (as \u0026).
			Env: []string{"VENDOR=x&y"},
			DeviceNodes: []*specs.DeviceNode{
				{Path: "/dev/vfio/vfio", Type: "c", Major: 10, Minor: 196, FileMode: &rw},
			},
		},
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gowriter DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	// No auto-refresh: no inotify watch on DIR, which only receives this one file.
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	if err == nil {
		err = cache.WriteSpec(spec(), name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gowriter:", err)
		os.Exit(1)
	}
	fmt.Println(dir + "/" + name)
}
