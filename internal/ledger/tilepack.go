package ledger

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/aitrail/aitrail/internal/merkle"
)

// Full tiles are kept in packs: the full tiles N of level L with the same
// N / packTiles are one file, log/tile/<L>/pack/<N / packTiles>, each tile at
// offset (N % packTiles) * tileBytes. A file for every tile cost about
// 260 µs of CPU to create under load, for every 256 records, and made
// millions of files of a large log (docs/BENCHMARKS.md, fifteenth round);
// writing into a pack costs a few microseconds.
//
// Tiles are appended in order, so the pack being filled can carry the
// append-only attribute, and a complete pack is sealed like a complete
// segment once its last tile is durable. After a crash, the tiles a pack
// holds past the durable watermark are cut off and written again.
const (
	packTiles = 256
	tileBytes = merkle.TileWidth * merkle.HashSize
	packDir   = "pack"
)

// packOf returns the pack that holds full tile id and where in it.
func packOf(id merkle.TileID) (k uint64, off int64) {
	return id.N / packTiles, int64(id.N%packTiles) * tileBytes
}

// packPath is the file of pack k of level.
func packPath(dir string, level int, k uint64) string {
	return filepath.Join(dir, "tile", strconv.Itoa(level), packDir, packName(k))
}

func packName(k uint64) string { return fmt.Sprintf("%08d", k) }

// tileName names a full tile and where it is stored, for messages.
func tileName(id merkle.TileID) string {
	k, off := packOf(id)
	return fmt.Sprintf("%s (tile/%d/%s/%s, bytes %d-%d)", id.Path(), id.Level, packDir, packName(k), off, off+tileBytes-1)
}

// readPackedTile reads full tile id from its pack in the ledger directory
// dir. It returns an error wrapping fs.ErrNotExist when the pack is missing
// or ends before the tile.
func readPackedTile(dir string, id merkle.TileID) ([]byte, error) {
	k, off := packOf(id)
	f, err := os.Open(packPath(dir, id.Level, k))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, tileBytes)
	n, err := f.ReadAt(data, off)
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: pack %s ends at tile %d of its %d", fs.ErrNotExist, f.Name(), int64(n)/tileBytes+off/tileBytes, packTiles)
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

// tileFilePath is where tile id is kept in a file of its own, at its C2SP
// path: a partial tile, or a full one of the old layout.
func tileFilePath(dir string, id merkle.TileID) string {
	return filepath.Join(dir, filepath.FromSlash(id.Path()))
}

// readTileFile reads a tile kept in a file of its own.
func readTileFile(dir string, id merkle.TileID) ([]byte, error) {
	return os.ReadFile(tileFilePath(dir, id))
}

// fullTiles is the number of full tiles of level in a tree of size records.
func fullTiles(size uint64, level int) uint64 {
	return size >> uint(merkle.TileHeight*(level+1))
}

// checkPackSize checks that the pack rel (pack k of level) holds no more
// than a pack's tiles and nothing past the full tiles of a log of n
// records: tiles are written only for records already durable, so a pack
// holding more means records were removed. (One cut short within the
// tree is a crash's, or damage: the tiles are compared apart.)
func checkPackSize(rel string, size int64, level int, k, n uint64) error {
	full := fullTiles(n, level)
	end := k*packTiles + uint64(size/tileBytes) // the tile after the pack's last whole one
	cut := size%tileBytes != 0
	switch {
	case size > packTiles*tileBytes:
		return fmt.Errorf("tile pack %s holds %d bytes: more than the %d tiles of a pack", rel, size, packTiles)
	case end > full || cut && end == full:
		return fmt.Errorf("tile pack %s holds %d bytes: more than the %d full tiles of level %d that the %d records of the log give",
			rel, size, full, level, n)
	}
	return nil
}

// packStat is a tile pack as found.
type packStat struct {
	rel   string // its path in the ledger directory
	size  int64
	level int
	k     uint64
}

// statPacks lists the tile packs of the ledger directory dir.
func statPacks(dir string) ([]packStat, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "tile", "*", packDir, "*"))
	if err != nil {
		return nil, err
	}
	var packs []packStat
	for _, path := range paths {
		rel, _ := filepath.Rel(dir, path)
		level, k, ok := parsePackPath(rel)
		if !ok {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("couldn't read tile pack %s: %w", rel, err)
		}
		packs = append(packs, packStat{rel, fi.Size(), level, k})
	}
	return packs, nil
}

// openPack is the pack of one level that full tiles are being appended to.
type openPack struct {
	k    uint64
	path string
	f    *os.File
	size int64
}

// writeTile appends a full tile to its pack, lazily: without fsync, which
// the sync loop does in bulk. After a crash, tiles past the durable
// watermark are written again. Once the ledger is open, only the tile
// writer calls it.
func (l *Ledger) writeTile(t merkle.Tile) error {
	k, off := packOf(t.ID)
	p := l.packs[t.ID.Level]
	if p == nil || p.k != k {
		var err error
		if p, err = l.openPack(t.ID.Level, k); err != nil {
			return err
		}
	}
	if p.size != off {
		return fmt.Errorf("pack %s holds %d bytes, but tile %s goes at byte %d", p.path, p.size, t.ID.Path(), off)
	}
	if _, err := p.f.Write(t.Data); err != nil {
		return err
	}
	p.size += tileBytes
	l.unsynced.Add(1)
	if t.ID.N%packTiles == packTiles-1 {
		// Complete: sealed once its last tile is durable.
		delete(l.packs, t.ID.Level)
		if err := p.f.Close(); err != nil {
			return err
		}
		if l.opts.Seal != SealOff {
			l.sealMu.Lock()
			l.toSeal = append(l.toSeal, tileFile{p.path, uint64(tileRecord(t.ID, merkle.TileWidth))})
			l.sealMu.Unlock()
		}
	}
	return nil
}

// openPack opens pack k of level for appending, creating it if needed, and
// makes it the level's open pack.
func (l *Ledger) openPack(level int, k uint64) (*openPack, error) {
	if p := l.packs[level]; p != nil {
		delete(l.packs, level)
		if err := p.f.Close(); err != nil {
			return nil, err
		}
	}
	path := packPath(l.dir, level, k)
	if dir := filepath.Dir(path); !l.madeDirs[dir] {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		l.madeDirs[dir] = true
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	l.seal.appendOnlyFile(path)
	p := &openPack{k: k, path: path, f: f, size: fi.Size()}
	l.packs[level] = p
	return p, nil
}

// closePacks closes the open packs.
func (l *Ledger) closePacks() {
	for level, p := range l.packs {
		p.f.Close()
		delete(l.packs, level)
	}
}

// cutPacks prepares the packs for recovery: at each level, the pack that
// holds the first full tile past the durable watermark (which covers
// durable records) is cut back to the tiles before it, and packs after it
// are removed; recovery writes those tiles again. Packs the watermark
// covers whole are left alone. A pack shorter than the watermark says is
// not lengthened: recovery reports the tiles it lacks.
func (l *Ledger) cutPacks(durable uint64) error {
	for level := 0; level < 64; level++ {
		dir := filepath.Join(l.dir, "tile", strconv.Itoa(level), packDir)
		names, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			if fullTiles(durable, level) == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("couldn't list tile packs: %w", err)
		}
		tiles := fullTiles(durable, level)
		for _, e := range names {
			k, err := strconv.ParseUint(e.Name(), 10, 64)
			if err != nil || e.Name() != packName(k) {
				continue // not a pack; verify reports it
			}
			path := filepath.Join(dir, e.Name())
			keep := int64(0)
			switch {
			case (k+1)*packTiles <= tiles:
				// Complete and durable: sealed, if it was not (sealing
				// was off, or the process stopped before it could, and
				// a start from the start-up snapshot does not go over
				// its records again).
				if err := l.seal.seal(path); err != nil {
					l.log.Warn("couldn't seal a complete tile pack", "err", err)
				}
				continue
			case k*packTiles < tiles:
				keep = int64(tiles-k*packTiles) * tileBytes
			}
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			if fi.Size() <= keep && keep > 0 {
				// Being filled, and holds nothing past the watermark.
				l.seal.appendOnlyFile(path)
				continue
			}
			if err := l.seal.unlock(path); err != nil {
				return fmt.Errorf("couldn't lift the append-only attribute of tile pack %s: %w", path, err)
			}
			if keep == 0 {
				if err := os.Remove(path); err != nil {
					return err
				}
				continue
			}
			if err := os.Truncate(path, keep); err != nil {
				return fmt.Errorf("couldn't cut off the tiles past the durable watermark: %w", err)
			}
			l.seal.appendOnlyFile(path)
		}
	}
	return nil
}

// unpackedTiles reports whether the ledger directory dir keeps its full
// tiles one to a file, as logs written before packs did: such a log has
// the first full tile of level 0 as a file, and no packs.
func unpackedTiles(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "tile", "0", "000"))
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "tile", "0", packDir))
	return errors.Is(err, fs.ErrNotExist)
}

// tileFiles are the files of tile/ outside the packs, as found at start.
type tileFiles struct {
	partial []string // partial tiles
	oldFull []string // full tiles of the old layout
	dirs    []string // the directories they are in, parents first
}

// listTileFiles walks the tile directory of the ledger directory dir, but
// not the packs.
func listTileFiles(dir string) tileFiles {
	var tf tileFiles
	filepath.WalkDir(filepath.Join(dir, "tile"), func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil
		case d.IsDir() && d.Name() == packDir:
			return filepath.SkipDir
		case d.IsDir():
			tf.dirs = append(tf.dirs, path)
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		id, err := merkle.ParseTilePath(filepath.ToSlash(rel))
		switch {
		case err != nil:
		case id.W < merkle.TileWidth:
			tf.partial = append(tf.partial, path)
		default:
			tf.oldFull = append(tf.oldFull, path)
		}
		return nil
	})
	return tf
}

// removeOldTiles removes the full tile files of the old layout that tf
// lists, lifting their seals; it runs once the packs that replace them are
// durable. Files it cannot remove are reported, not fatal: nothing reads
// them.
func (l *Ledger) removeOldTiles(tf tileFiles) {
	if len(tf.oldFull) == 0 {
		return
	}
	var failed int
	var lastErr error
	for _, path := range tf.oldFull {
		if err := l.seal.unlock(path); err != nil {
			failed, lastErr = failed+1, err
			continue
		}
		if err := os.Remove(path); err != nil {
			failed, lastErr = failed+1, err
		}
	}
	// Directories left empty, deepest first; the others stay.
	for i := len(tf.dirs) - 1; i >= 0; i-- {
		os.Remove(tf.dirs[i])
	}
	if failed > 0 {
		l.log.Warn("couldn't remove full tile files of the old layout; the server no longer reads them, remove them by hand",
			"files", failed, "last_error", lastErr)
		return
	}
	l.log.Info("moved the log's full tiles into packs", "old_files_removed", len(tf.oldFull))
}

// parsePackPath parses the path of a tile pack relative to the ledger
// directory, tile/<L>/pack/<K>.
func parsePackPath(rel string) (level int, k uint64, ok bool) {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) != 4 || parts[0] != "tile" || parts[2] != packDir {
		return 0, 0, false
	}
	level, err := strconv.Atoi(parts[1])
	if err != nil || level < 0 || level > 63 || strconv.Itoa(level) != parts[1] {
		return 0, 0, false
	}
	k, err = strconv.ParseUint(parts[3], 10, 64)
	if err != nil || packName(k) != parts[3] {
		return 0, 0, false
	}
	return level, k, true
}
