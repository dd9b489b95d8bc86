package gvisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/sandboxrt/diskimg"
	"golang.org/x/sys/unix"
)

// The writable root of a sandbox with a disk limit (Resources.DiskMB > 0):
//
//	bundles/<id>/disk.img   sparse ext4 image of DiskMB MiB (diskimg)
//	bundles/<id>/disk/      that image, mounted through a loop device
//	                        (autoclear: the device goes with the unmount)
//	bundles/<id>/rootfs/    host overlayfs: the template (lower, never
//	                        written) + disk/upper; runsc's root, --overlay2=none
//
// Writes then go through runsc's gofer to the overlay, and past DiskMB they
// fail with ENOSPC inside the sandbox (measured with runsc 20221219:
// "write /x: no space left on device", the sandbox lives on). runsc's own
// in-memory overlay has no size limit in that release, and its file-backed
// medium makes the sentry die at a full filesystem, so neither can do this.

func (d *Driver) diskPaths(id string) (img, mnt, root string) {
	b := d.bundleDir(id)
	return filepath.Join(b, "disk.img"), filepath.Join(b, "disk"), filepath.Join(b, "rootfs")
}

// setupDisk builds the sandbox's writable root over template and returns
// the directory runsc is to use as root. On error what it made is undone
// by teardownDisk (Destroy calls it).
func (d *Driver) setupDisk(ctx context.Context, id, template string, sizeMB int64) (string, error) {
	if strings.ContainsAny(template, ",:\\") {
		return "", fmt.Errorf("template path %q: overlayfs cannot take ',', ':' or '\\' in it", template)
	}
	img, mnt, root := d.diskPaths(id)
	if err := d.disks.Make(ctx, img, sizeMB); err != nil {
		return "", err
	}
	for _, dir := range []string{mnt, root} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("disk: %w", err)
		}
	}
	if err := mountLoop(img, mnt); err != nil {
		return "", fmt.Errorf("disk: %w", err)
	}
	for _, dir := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(mnt, dir), 0o755); err != nil {
			return "", fmt.Errorf("disk: %w", err)
		}
	}
	// The overlay's root takes the mode of upper's: make it the template's.
	if fi, err := os.Stat(template); err == nil {
		os.Chmod(filepath.Join(mnt, "upper"), fi.Mode().Perm())
	}
	opts := "lowerdir=" + template + ",upperdir=" + mnt + "/upper,workdir=" + mnt + "/work"
	if err := unix.Mount("overlay", root, "overlay", unix.MS_NODEV, opts); err != nil {
		return "", fmt.Errorf("disk: mount overlay: %w", err)
	}
	return root, nil
}

// teardownDisk unmounts the overlay and the disk (which frees the loop
// device); the bundle's removal then deletes the image. Missing pieces are
// not an error: it also cleans half-made and crashed-run disks.
func (d *Driver) teardownDisk(id string) error {
	_, mnt, root := d.diskPaths(id)
	var errs []error
	for _, dir := range []string{root, mnt} {
		if err := unmount(dir, 0); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// diskUsage reports the bytes written to the sandbox's disk and its size
// (0, 0 without a disk).
func (d *Driver) diskUsage(id string) (used, total uint64) {
	_, mnt, _ := d.diskPaths(id)
	var st unix.Stat_t
	var parent unix.Stat_t
	if unix.Stat(mnt, &st) != nil || unix.Stat(filepath.Dir(mnt), &parent) != nil || st.Dev == parent.Dev {
		return 0, 0 // not mounted
	}
	used, total, err := diskimg.Usage(mnt)
	if err != nil {
		return 0, 0
	}
	return used, total
}

// unmount unmounts dir if something is mounted there; if it is still
// busy (the gofer's last file descriptors closing), it is detached at once
// and goes when they are closed: runsc is gone by then, nothing writes.
func unmount(dir string, flags int) error {
	for range 4 { // stacked mounts
		err := unix.Unmount(dir, flags)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not a mount point (any more)
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			continue
		}
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// mountLoop attaches img to a free loop device (autoclear) and mounts its
// ext4 at dir.
func mountLoop(img, dir string) error {
	f, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer ctl.Close()
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return fmt.Errorf("get a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := openLoop(dev, n)
		if err != nil {
			return err
		}
		// Direct I/O to the image: the sandbox's writes are then cached
		// once (in the ext4 above, charged to its memory cgroup and written
		// back under its pressure), not a second time as the image file's
		// pages. Without it a full disk of dirty pages can OOM the sandbox.
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:], "declaw:"+img)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) {
			cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO // a backing filesystem without O_DIRECT
			err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		}
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue // another process took it first
		}
		if err != nil {
			lf.Close()
			return fmt.Errorf("configure %s: %w", dev, err)
		}
		err = unix.Mount(dev, dir, "ext4", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID, diskimg.MountOptions)
		if err != nil {
			unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
			lf.Close()
			return fmt.Errorf("mount %s: %w", dev, err)
		}
		lf.Close() // the mount holds the device; autoclear detaches it at unmount
		return nil
	}
	return errors.New("no free loop device after 20 tries")
}

// openLoop opens /dev/loopN, creating the node if devtmpfs has not yet.
func openLoop(dev string, n int) (*os.File, error) {
	for range 50 {
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return lf, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil, fmt.Errorf("open %s: no device node", dev)
}
