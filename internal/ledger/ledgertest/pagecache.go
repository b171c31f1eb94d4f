// Package ledgertest helps tests see what the ledger leaves in the
// operating system's page cache (ledger.Options.PageCacheBytes).
package ledgertest

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DroppableDir returns a temporary directory on a file system whose page
// cache can be dropped; on tmpfs, whose files live in the page cache, it
// skips the test.
func DroppableDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		tb.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		tb.Skipf("%s is on tmpfs, whose files live in the page cache", dir)
	}
	return dir
}

// CachedShare returns the share of the pages of file's bytes [from, to)
// that are in the page cache (mincore).
func CachedShare(tb testing.TB, file string, from, to int64) float64 {
	tb.Helper()
	f, err := os.Open(file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), from, int(to-from), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		tb.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(len(vec))
}
