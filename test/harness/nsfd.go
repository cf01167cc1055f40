package harness

import "github.com/vishvananda/netns"

func openNS(n Netns) (netns.NsHandle, error) { return netns.GetFromPath(n.Path()) }
