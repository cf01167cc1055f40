package main

import (
	"github.com/vishvananda/netns"

	"github.com/tapbridge/tapbridge-cni/test/harness"
)

func openNetns(n harness.Netns) (netns.NsHandle, error) { return netns.GetFromPath(n.Path()) }
