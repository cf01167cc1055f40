package guest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// busyboxPath is where Debian's busybox-static installs its binary.
const busyboxPath = "/bin/busybox"

// writeInitramfs writes a gzip'ed newc cpio archive holding busybox (with
// a symlink per applet), the modules with their load order in
// /etc/tb-modules, /dev/console (the kernel opens it before /init runs,
// and we cannot mknod it in a temp dir without caring about ownership),
// the extra files (the DHCP clients), and /init.
func writeInitramfs(ctx context.Context, dest, busybox string, mods []module, extra []imageFile) error {
	bb, err := staticBusybox(busybox)
	if err != nil {
		return err
	}
	applets, err := output(ctx, "", busybox, "--list-full")
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}

	f, err := os.OpenFile(dest, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	cw := newCpioWriter(zw)

	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "etc", "root", "www", "lib/modules"} {
		cw.mkdirAll(d)
	}
	cw.charDev("dev/console", 0o600, 5, 1)
	cw.file("bin/busybox", 0o755, bb)
	sc := bufio.NewScanner(bytes.NewReader(applets))
	for sc.Scan() {
		if p := strings.TrimSpace(sc.Text()); p != "" && p != "bin/busybox" {
			cw.symlink(p, "/bin/busybox")
		}
	}
	var names []string
	for _, m := range mods {
		data, err := moduleBytes(ctx, m.path)
		if err != nil {
			return err
		}
		cw.file("lib/modules/"+m.name+".ko", 0o644, data)
		names = append(names, m.name)
	}
	cw.file("etc/tb-modules", 0o644, []byte(strings.Join(names, "\n")+"\n"))
	for _, f := range extra {
		cw.file(f.name, f.mode, f.data)
	}
	cw.file("init", 0o755, []byte(initScript))

	if err := cw.close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

// staticBusybox reads busybox and checks that it needs no dynamic loader,
// as the initramfs has no libc.
func staticBusybox(p string) ([]byte, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read busybox (install busybox-static): %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", p, err)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked: install busybox-static", p)
		}
	}
	return data, nil
}

// cpioWriter writes the "newc" (070701) cpio format the kernel unpacks.
// Everything is owned by root with mtime 0, so images are reproducible.
// The first error sticks and is returned by close.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
	cpioLink = 0o120000
	cpioChar = 0o020000
)

func newCpioWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, dirs: map[string]bool{".": true, "": true}}
}

// mkdirAll adds dir and its missing parents.
func (c *cpioWriter) mkdirAll(dir string) {
	if c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.dirs[dir] = true
	c.entry(dir, cpioDir|0o755, nil, 0, 0)
}

func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.mkdirAll(path.Dir(name))
	c.entry(name, cpioFile|perm, data, 0, 0)
}

func (c *cpioWriter) symlink(name, target string) {
	c.mkdirAll(path.Dir(name))
	c.entry(name, cpioLink|0o777, []byte(target), 0, 0)
}

func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	c.mkdirAll(path.Dir(name))
	c.entry(name, cpioChar|perm, nil, major, minor)
}

// close writes the trailer entry.
func (c *cpioWriter) close() error {
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	return c.err
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte, rmajor, rminor uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	// Fields: ino mode uid gid nlink mtime filesize devmajor devminor
	// rdevmajor rdevminor namesize check, each 8 hex digits.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	var buf bytes.Buffer
	buf.WriteString(hdr)
	buf.WriteString(name)
	buf.WriteByte(0)
	pad4(&buf)
	buf.Write(data)
	pad4(&buf)
	_, c.err = c.w.Write(buf.Bytes())
}

// pad4 aligns to 4 bytes; the header is 110 bytes, so the buffer's own
// length is the offset that matters as long as each entry starts aligned.
func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
