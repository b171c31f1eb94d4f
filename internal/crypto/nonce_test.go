package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"sync"
	"testing"
)

// TestNoncesAreUnique: blobs sealed concurrently, across several refills
// of the nonce buffer, never share a nonce, and each opens.
func TestNoncesAreUnique(t *testing.T) {
	block, err := aes.NewCipher(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 1000 // 4,000 nonces of 12 bytes: about twelve refills
	blobs := make([][][]byte, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				b, err := seal(aead, []byte("content"), nil)
				if err != nil {
					t.Error(err)
					return
				}
				blobs[w] = append(blobs[w], b)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, bs := range blobs {
		for _, b := range bs {
			nonce := string(b[1 : 1+aead.NonceSize()])
			if seen[nonce] {
				t.Fatalf("nonce %x used twice", nonce)
			}
			seen[nonce] = true
			if pt, err := open(aead, b, nil); err != nil || string(pt) != "content" {
				t.Fatalf("open: %q, %v", pt, err)
			}
		}
	}
	if len(seen) != workers*each {
		t.Fatalf("%d nonces, want %d", len(seen), workers*each)
	}
}
