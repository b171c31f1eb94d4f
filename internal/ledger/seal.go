package ledger

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/internal/merkle"
)

// SealMode says how the ledger protects files that are complete (segments
// it has moved past, full tile packs below the durable watermark) against
// being changed or deleted through the file system.
//
// Sealing is a second line of defence against accidents and careless
// operators, not against an attacker with root: root can lift every
// attribute. The Merkle tree and signed checkpoints are what make tampering
// detectable; sealing makes it harder to do by mistake.
type SealMode int

const (
	// SealOff leaves files writable by their owner.
	SealOff SealMode = iota
	// SealReadOnly makes complete files read-only (mode 0400).
	SealReadOnly
	// SealImmutable makes complete files read-only and sets the immutable
	// attribute (chattr +i), when the process may set it (it needs
	// CAP_LINUX_IMMUTABLE) and the file system supports it. Where it
	// cannot, it seals as SealReadOnly and says why in SealStatus. The
	// tile packs being filled get the append-only attribute (chattr +a),
	// and so does the active segment when commits append
	// (Options.Preallocate negative); when they write over zeros ahead of
	// its end, it cannot.
	SealImmutable
)

// String returns the mode's configuration name.
func (m SealMode) String() string {
	switch m {
	case SealOff:
		return "off"
	case SealReadOnly:
		return "read-only"
	case SealImmutable:
		return "immutable"
	}
	return fmt.Sprintf("SealMode(%d)", int(m))
}

// ParseSealMode parses a configuration name: off, read-only or immutable.
func ParseSealMode(s string) (SealMode, error) {
	for _, m := range []SealMode{SealOff, SealReadOnly, SealImmutable} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown seal mode %q: use off, read-only or immutable", s)
}

// SealStatus reports how the ledger's files are protected, as it stands.
type SealStatus struct {
	// Mode is the configured mode.
	Mode string `json:"mode"`
	// Attributes is true when the immutable and append-only attributes are
	// being set; false when the mode does not ask for them or they cannot be
	// set (then Reason says why).
	Attributes bool   `json:"attributes"`
	Reason     string `json:"reason,omitempty"`
	// ActiveAppendOnly is true when the active segment is being made
	// append-only: attributes are set and commits append.
	ActiveAppendOnly bool `json:"active_append_only"`
	// SealedFiles counts files this process sealed or found sealed.
	SealedFiles int64 `json:"sealed_files"`
	// Failures counts files that could not be sealed; LastError is the last
	// such error.
	Failures  int64  `json:"failures"`
	LastError string `json:"last_error,omitempty"`
}

// Inode flags of linux/fs.h, as chattr sets them.
const (
	fsImmutable = 0x00000010 // FS_IMMUTABLE_FL: chattr +i
	fsAppend    = 0x00000020 // FS_APPEND_FL: chattr +a
)

// sealedPerm is the mode of a sealed file.
const sealedPerm = 0o400

// sealer seals files. Its methods are safe for concurrent use.
type sealer struct {
	mode         SealMode
	appendActive bool // whether the active segment is to be append-only

	mu        sync.Mutex
	attrsOK   bool   // attributes have worked so far
	reason    string // why attributes are not set
	sealed    int64
	failures  int64
	lastError string
}

func newSealer(mode SealMode, appendActive bool) *sealer {
	s := &sealer{mode: mode, appendActive: appendActive, attrsOK: mode == SealImmutable}
	if mode != SealImmutable {
		s.reason = "the seal mode does not set attributes"
	}
	return s
}

func (s *sealer) status() SealStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SealStatus{Mode: s.mode.String(), Attributes: s.attrsOK, Reason: s.reason,
		ActiveAppendOnly: s.attrsOK && s.appendActive,
		SealedFiles:      s.sealed, Failures: s.failures, LastError: s.lastError}
}

// useAttrs reports whether to try setting attributes.
func (s *sealer) useAttrs() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attrsOK
}

// noAttrs records that attributes cannot be set here, and why; sealing
// goes on read-only.
func (s *sealer) noAttrs(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attrsOK = false
	switch {
	case errors.Is(err, unix.EPERM):
		s.reason = "not permitted: the process lacks CAP_LINUX_IMMUTABLE"
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		s.reason = "the file system does not support the immutable attribute"
	default:
		s.reason = err.Error()
	}
}

func (s *sealer) done(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failures++
		s.lastError = err.Error()
		return
	}
	s.sealed++
}

// seal makes a complete file read-only and, if it can, immutable. A file
// that is already sealed is counted and left alone.
func (s *sealer) seal(path string) error {
	if s.mode == SealOff {
		return nil
	}
	err := s.sealFile(path)
	s.done(err)
	if err != nil {
		return fmt.Errorf("couldn't seal %s: %w", filepath.Base(path), err)
	}
	return nil
}

func (s *sealer) sealFile(path string) error {
	attrs := s.useAttrs()
	if attrs {
		// An append-only file's mode cannot change: lift that first.
		if err := setFlags(path, 0, fsAppend); err != nil {
			s.noAttrs(err)
			attrs = false
		}
	}
	if err := os.Chmod(path, sealedPerm); err != nil && !errors.Is(err, unix.EPERM) {
		// EPERM: already immutable, so its mode cannot change; the
		// attribute below is checked instead.
		return err
	}
	if attrs {
		if err := setFlags(path, fsImmutable, 0); err != nil {
			s.noAttrs(err)
		}
	}
	return nil
}

// appendOnly marks the active segment append-only, if attributes are used
// and commits append.
func (s *sealer) appendOnly(path string) {
	if s.appendActive {
		s.appendOnlyFile(path)
	}
}

// appendOnlyFile marks a file that is only ever appended to (a tile pack
// being filled) append-only, if attributes are used.
func (s *sealer) appendOnlyFile(path string) {
	if !s.useAttrs() {
		return
	}
	if err := setFlags(path, fsAppend, 0); err != nil {
		s.noAttrs(err)
	}
}

// unlock makes the active segment writable again: it lifts the append-only
// attribute (and the immutable one and read-only mode, which it carries if
// the process stopped right after completing it) so that an unfinished tail
// can be cut off. It succeeds when there is nothing to lift.
//
// It runs whatever the mode: a log sealed by an earlier run must still
// recover when sealing has since been turned off.
func (s *sealer) unlock(path string) error {
	if flags, err := getFlags(path); err == nil && flags&(fsAppend|fsImmutable) != 0 {
		if err := setFlags(path, 0, fsAppend|fsImmutable); err != nil {
			return err
		}
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o200 == 0 {
		return os.Chmod(path, 0o600)
	}
	return nil
}

// getFlags returns a file's inode flags (lsattr).
func getFlags(path string) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
}

// setFlags sets and clears inode flags (chattr), without a system call when
// they already are as asked.
func setFlags(path string, set, clear int) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	want := (flags | set) &^ clear
	if want == flags {
		return nil
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, want)
}

// FileSeal is the protection of one file, as found on disk.
type FileSeal struct {
	ReadOnly   bool // no write permission bits
	Immutable  bool // chattr +i
	AppendOnly bool // chattr +a
}

// InspectSeal reports a file's protection. Attributes read as unset where
// the file system has none.
func InspectSeal(path string) (FileSeal, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileSeal{}, err
	}
	fs := FileSeal{ReadOnly: fi.Mode().Perm()&0o222 == 0}
	if flags, err := getFlags(path); err == nil {
		fs.Immutable = flags&fsImmutable != 0
		fs.AppendOnly = flags&fsAppend != 0
	}
	return fs, nil
}

// LiftSeals clears the immutable and append-only attributes of every file
// under dir and gives the owner write permission back, so that the files can
// be moved or deleted. It needs the same privilege as setting them. It is for
// operators retiring a log and for tests; the running ledger never calls it
// on complete files.
func LiftSeals(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if flags, err := getFlags(path); err == nil && flags&(fsImmutable|fsAppend) != 0 {
			if err := setFlags(path, 0, fsImmutable|fsAppend); err != nil {
				return fmt.Errorf("couldn't lift the attributes of %s: %w", path, err)
			}
		}
		return os.Chmod(path, 0o600)
	})
}

// SealReport describes the protection of a ledger directory's files, as
// found on disk.
type SealReport struct {
	// CompleteSegments counts the segments the ledger has moved past; each
	// should be sealed.
	CompleteSegments int `json:"complete_segments"`
	// ReadOnlySegments and ImmutableSegments count those sealed read-only,
	// and those that also carry the immutable attribute.
	ReadOnlySegments  int `json:"read_only_segments"`
	ImmutableSegments int `json:"immutable_segments"`
	// ActiveSegment is the file being appended to, and ActiveAppendOnly
	// whether it carries the append-only attribute.
	ActiveSegment    string `json:"active_segment"`
	ActiveAppendOnly bool   `json:"active_append_only"`
	// CompletePacks counts the tile packs that are full and below the
	// durable watermark; each should be sealed. ReadOnlyPacks and
	// ImmutablePacks are as above. OpenPacks counts the packs still being
	// filled (one a level at most) and AppendOnlyPacks those of them that
	// carry the append-only attribute.
	CompletePacks   int `json:"complete_tile_packs"`
	ReadOnlyPacks   int `json:"read_only_tile_packs"`
	ImmutablePacks  int `json:"immutable_tile_packs"`
	OpenPacks       int `json:"open_tile_packs"`
	AppendOnlyPacks int `json:"append_only_tile_packs"`
	// OldTileFiles counts full tiles kept one to a file, as logs written
	// before packs kept them: a server moves them into packs when it
	// starts.
	OldTileFiles int `json:"old_layout_tile_files,omitempty"`
}

// InspectSeals reports how the files of the ledger in dir are protected. It
// only reads, so it may run beside the server.
func InspectSeals(dir string) (SealReport, error) {
	var r SealReport
	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		return r, fmt.Errorf("couldn't list segments: %w", err)
	}
	for i, first := range firsts {
		path := filepath.Join(dir, segDir, segmentName(first))
		fs, err := InspectSeal(path)
		if err != nil {
			return r, err
		}
		if i == len(firsts)-1 {
			r.ActiveSegment, r.ActiveAppendOnly = segmentName(first), fs.AppendOnly
			continue
		}
		r.CompleteSegments++
		r.ReadOnlySegments += b2i(fs.ReadOnly)
		r.ImmutableSegments += b2i(fs.Immutable)
	}
	durable, err := readWatermarkFile(dir)
	if err != nil {
		return r, err
	}
	tileDir := filepath.Join(dir, "tile")
	err = filepath.WalkDir(tileDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		level, k, ok := parsePackPath(rel)
		if d.IsDir() {
			return nil
		}
		if !ok {
			if id, err := merkle.ParseTilePath(filepath.ToSlash(rel)); err == nil && id.W == merkle.TileWidth {
				r.OldTileFiles++
			}
			return nil // partial tiles, or not a pack
		}
		fs, err := InspectSeal(path)
		if err != nil {
			return err
		}
		if (k+1)*packTiles > fullTiles(durable, level) {
			r.OpenPacks++
			r.AppendOnlyPacks += b2i(fs.AppendOnly)
			return nil
		}
		r.CompletePacks++
		r.ReadOnlyPacks += b2i(fs.ReadOnly)
		r.ImmutablePacks += b2i(fs.Immutable)
		return nil
	})
	return r, err
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
