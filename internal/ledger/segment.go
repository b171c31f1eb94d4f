package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Segment file layout.
//
// A segment starts with a 16-byte header: the magic "AITRSEG1" and the index
// of its first record (big-endian uint64). Records follow back to back, each
// framed as
//
//	u32 record length | u32 blob length | u32 CRC-32C | record | blob
//
// where the CRC covers the two lengths, the record and the blob. The top bit
// of the record length marks the last frame of a group commit, so recovery
// can tell a commit that was written whole from one cut short by a crash.
// The record
// is the canonical JSON the Merkle leaf commits to; the blob is the record's
// encrypted content (or empty), kept beside the record but outside the tree.
const (
	segMagic        = "AITRSEG1"
	segHeaderSize   = 16
	frameHeaderSize = 12
	segSuffix       = ".seg"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segmentName returns the file name of the segment whose first record is first.
func segmentName(first uint64) string {
	return fmt.Sprintf("%020d%s", first, segSuffix)
}

// listSegments returns the first indexes of the segments in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil || segmentName(first) != e.Name() {
			return nil, fmt.Errorf("unexpected file %s in segment directory", e.Name())
		}
		out = append(out, first)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func segHeader(first uint64) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, segMagic)
	binary.BigEndian.PutUint64(h[8:], first)
	return h
}

// commitEndBit marks the last frame of a group commit.
const commitEndBit = 1 << 31

// appendFrame appends one framed record to buf.
func appendFrame(buf, record, blob []byte) []byte {
	var h [frameHeaderSize]byte
	binary.BigEndian.PutUint32(h[0:], uint32(len(record)))
	binary.BigEndian.PutUint32(h[4:], uint32(len(blob)))
	crc := crc32.Update(0, crcTable, h[:8])
	crc = crc32.Update(crc, crcTable, record)
	crc = crc32.Update(crc, crcTable, blob)
	binary.BigEndian.PutUint32(h[8:], crc)
	buf = append(buf, h[:]...)
	buf = append(buf, record...)
	return append(buf, blob...)
}

// markCommitEnd sets the commit-end bit on the frame at off in buf and
// updates its checksum.
func markCommitEnd(buf []byte, off int) {
	h := buf[off:]
	recLen := binary.BigEndian.Uint32(h[0:])
	blobLen := binary.BigEndian.Uint32(h[4:])
	binary.BigEndian.PutUint32(h[0:], recLen|commitEndBit)
	crc := crc32.Update(0, crcTable, h[:8])
	crc = crc32.Update(crc, crcTable, h[frameHeaderSize:frameHeaderSize+int(recLen)+int(blobLen)])
	binary.BigEndian.PutUint32(h[8:], crc)
}

// errFrame classes the ways a frame can be damaged.
var (
	errTruncated = errors.New("truncated record")
	errChecksum  = errors.New("checksum mismatch")
	errFrameSize = errors.New("impossible record length")
)

// frame is one decoded frame.
type frame struct {
	off       int64 // offset of the frame header in the segment
	record    []byte
	blob      []byte
	commitEnd bool // the last frame of a group commit
}

// frameScanner reads the frames of one segment sequentially with large
// reads. With skipBlobs it does not read blobs (nor check the CRC, which
// covers them); it still checks the framing.
type frameScanner struct {
	r          io.ReaderAt
	size       int64
	off        int64
	buf        []byte
	bufOff     int64 // file offset of buf[0]
	chunk      int   // how much window reads at least
	skipBlobs  bool
	ahead      *os.File // if set, the file to ask the kernel to read ahead in
	advised    int64    // the end of what was asked for
	dropBehind bool     // whether to drop the pages scanned from the page cache
	dropped    int64    // the pages before this were dropped from the page cache
	// With zeroTail, a rest of the segment that holds only zeros is its
	// end (the ledger fills the active segment ahead with zeros: see
	// prealloc.go); zeros then says how many bytes of them there were.
	zeroTail bool
	zeros    int64
}

// readAhead is how far ahead of a scan the kernel is asked to read, and
// aheadStep how much of that is used up before it is asked again.
const readAhead, aheadStep = 32 << 20, 8 << 20

// readingAhead makes s ask the kernel to read f ahead of the scan, for
// scans of whole segments (verify, recovery, followers reading files):
// the disk then reads while the records before are checked, instead of
// each chunk waiting for its own read. With dropBehind, the pages scanned
// are dropped from the page cache behind the scan, as the ledger drops
// what it writes (Options.PageCacheBytes): the read-ahead then reuses them
// instead of taking fresh memory, which made verifying a 5.3 GB log half as
// fast again (docs/BENCHMARKS.md, eighth round). A scan that another
// follows over the same bytes leaves them cached for it.
func (s *frameScanner) readingAhead(f *os.File, dropBehind bool) *frameScanner {
	s.ahead, s.dropBehind, s.dropped = f, dropBehind, s.off&^(pageSize-1) // only what it reads
	return s
}

// maxFrameBlob is the largest blob the segment format holds. It is a
// property of the format, not of the configuration, so that a log written
// under a larger limit is always readable.
const maxFrameBlob = 1<<30 + 1<<20

const scanChunk = 1 << 20

func newFrameScanner(r io.ReaderAt, size, off int64) *frameScanner {
	return &frameScanner{r: r, size: size, off: off, bufOff: off, chunk: scanChunk}
}

// window returns n bytes at file offset off, reading ahead in chunks.
func (s *frameScanner) window(off int64, n int) ([]byte, error) {
	if off+int64(n) > s.size {
		return nil, errTruncated
	}
	if off >= s.bufOff && off+int64(n) <= s.bufOff+int64(len(s.buf)) {
		return s.buf[off-s.bufOff : off-s.bufOff+int64(n)], nil
	}
	want := max(n, s.chunk)
	if rem := s.size - off; int64(want) > rem {
		want = int(rem)
	}
	if s.ahead != nil && off+int64(want)+readAhead-aheadStep > s.advised {
		fd := int(s.ahead.Fd())
		from := max(s.advised, off)
		// Advice only: if it fails, reads wait for the disk, or pages
		// stay cached.
		_ = unix.Fadvise(fd, from, off+readAhead-from, unix.FADV_WILLNEED)
		s.advised = off + readAhead
		if behind := (off - aheadStep) &^ (pageSize - 1); s.dropBehind && behind > s.dropped {
			_ = unix.Fadvise(fd, s.dropped, behind-s.dropped, unix.FADV_DONTNEED)
			s.dropped = behind
		}
	}
	if cap(s.buf) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	if _, err := s.r.ReadAt(s.buf, off); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, err
	}
	s.bufOff = off
	return s.buf[:n], nil
}

// next returns the next frame, io.EOF at the clean end of the segment, or
// an error wrapping errTruncated, errChecksum or errFrameSize. The returned
// slices are valid until the next call.
func (s *frameScanner) next() (frame, error) {
	if s.off == s.size {
		return frame{}, io.EOF
	}
	h, err := s.window(s.off, frameHeaderSize)
	if err != nil && !(s.zeroTail && errors.Is(err, errTruncated)) {
		return frame{}, err
	}
	if s.zeroTail && (err != nil || isZero(h)) {
		// Zeros (or fewer bytes than a header) from here on are the end.
		zero, err := s.restIsZero()
		switch {
		case err != nil:
			return frame{}, err
		case zero:
			return frame{}, io.EOF
		case h == nil:
			return frame{}, errTruncated
		}
	}
	recField := binary.BigEndian.Uint32(h[0:])
	recLen := int64(recField &^ commitEndBit)
	blobLen := int64(binary.BigEndian.Uint32(h[4:]))
	crc := binary.BigEndian.Uint32(h[8:])
	var lens [8]byte
	copy(lens[:], h[:8])
	if recLen == 0 || recLen > maxRecordBytes || blobLen > maxFrameBlob {
		return frame{}, errFrameSize
	}
	f := frame{off: s.off, commitEnd: recField&commitEndBit != 0}
	body := s.off + frameHeaderSize
	if body+recLen+blobLen > s.size {
		return frame{}, errTruncated
	}
	if s.skipBlobs {
		rec, err := s.window(body, int(recLen))
		if err != nil {
			return frame{}, err
		}
		f.record = rec
	} else {
		all, err := s.window(body, int(recLen+blobLen))
		if err != nil {
			return frame{}, err
		}
		c := crc32.Update(0, crcTable, lens[:])
		c = crc32.Update(c, crcTable, all)
		if c != crc {
			return frame{}, errChecksum
		}
		f.record = all[:recLen]
		if blobLen > 0 {
			f.blob = all[recLen:]
		}
	}
	s.off = body + recLen + blobLen
	return f, nil
}

// restIsZero reports whether the segment holds only zeros from the scan's
// offset on. If so, that offset becomes the segment's end, and next
// returns io.EOF.
func (s *frameScanner) restIsZero() (bool, error) {
	for off := s.off; off < s.size; {
		n := min(int64(scanChunk), s.size-off)
		b, err := s.window(off, int(n))
		if err != nil {
			return false, err
		}
		if !isZero(b) {
			return false, nil
		}
		off += n
	}
	s.zeros, s.size = s.size-s.off, s.off
	return true, nil
}

// openSegmentFile opens a segment for reading and returns its size.
func openSegmentFile(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("couldn't open segment %s: %w", filepath.Base(path), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// checkSegHeader validates a segment's header.
func checkSegHeader(f *os.File, first uint64) error {
	h := make([]byte, segHeaderSize)
	if _, err := f.ReadAt(h, 0); err != nil {
		return fmt.Errorf("couldn't read header: %w", err)
	}
	if string(h[:8]) != segMagic {
		return fmt.Errorf("bad magic %q", h[:8])
	}
	if got := binary.BigEndian.Uint64(h[8:]); got != first {
		return fmt.Errorf("header says first record %d, file name says %d", got, first)
	}
	return nil
}

// syncDir fsyncs a directory so that entries created in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeFileAtomic writes data to path through a temporary file and a rename.
// With sync, the file and its directory are fsynced.
func writeFileAtomic(path string, data []byte, perm os.FileMode, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if sync {
		return syncDir(filepath.Dir(path))
	}
	return nil
}
