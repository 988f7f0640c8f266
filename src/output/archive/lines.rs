//! An hour's buffered records as lines held in the payloads they arrived in: slices of the
//! request bodies and fetched batches (reference-counted [`Bytes`], not copied), and — rarely —
//! lines copied: rebuilt when a record's own bytes cannot stand as its line, or a run too small
//! a part of its payload to keep the payload alive for (the archive's output decides). The
//! object is written from the pieces as they lie (one `write` per piece, or one S3 payload of
//! them), so the records of an NDJSON body are copied once, by the kernel, between arrival and
//! disk.
//!
//! Every piece holds whole lines, each ending in `\n`: a line never spans two pieces, so a
//! record can always be read back as one slice ([`Lines::each`]).

use bytes::Bytes;

/// Lines in pieces; offsets count from the first byte of the first piece.
#[derive(Default, Debug)]
pub struct Lines {
    /// The pieces before `tail`, in order.
    pieces: Vec<Bytes>,
    /// Lines rebuilt since the last piece pushed, not yet frozen into one.
    tail: Vec<u8>,
    /// Bytes in `pieces`.
    frozen: usize,
}

impl Lines {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.frozen + self.tail.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `piece`, whole lines each ending in `\n`, uncopied.
    pub fn push_piece(&mut self, piece: Bytes) {
        debug_assert!(piece.last() == Some(&b'\n'), "a piece ends a line");
        self.freeze();
        self.frozen += piece.len();
        self.pieces.push(piece);
    }

    /// Appends `lines`, copied, and the `\n` that ends the last: one line, or whole lines each
    /// ending in `\n` but the last.
    pub fn push_line(&mut self, lines: &[u8]) {
        self.tail.extend_from_slice(lines);
        self.tail.push(b'\n');
    }

    /// Makes the rebuilt lines a piece of their own.
    fn freeze(&mut self) {
        if !self.tail.is_empty() {
            let tail = Bytes::from(std::mem::take(&mut self.tail));
            self.frozen += tail.len();
            self.pieces.push(tail);
        }
    }

    /// The pieces, in order, for writing: cheap to clone, the bytes are shared.
    pub fn pieces(&mut self) -> Vec<Bytes> {
        self.freeze();
        self.pieces.clone()
    }

    /// Splits off and returns the bytes from `at` on; `at` is where a line ends.
    pub fn split_off(&mut self, at: usize) -> Lines {
        self.freeze();
        let mut start = 0;
        let mut i = 0;
        while i < self.pieces.len() && start + self.pieces[i].len() <= at {
            start += self.pieces[i].len();
            i += 1;
        }
        let mut rest = self.pieces.split_off(i);
        if let Some(first) = rest.first_mut() {
            if at > start {
                // The piece holds lines on both sides: each side keeps its part, uncopied.
                self.pieces.push(first.split_to(at - start));
            }
        }
        let moved: usize = rest.iter().map(Bytes::len).sum();
        self.frozen -= moved;
        Lines {
            pieces: rest,
            tail: Vec::new(),
            frozen: moved,
        }
    }

    /// Drops the bytes before `at`; `at` is where a line ends.
    pub fn drop_front(&mut self, at: usize) {
        let rest = self.split_off(at);
        *self = rest;
    }

    /// Each line of the records ending at `ends` (after its `\n`), without its `\n`.
    pub fn each<'a>(&'a self, ends: &'a [u32]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut pieces = self
            .pieces
            .iter()
            .map(|p| &p[..])
            .chain(std::iter::once(&self.tail[..]));
        let mut piece: &[u8] = &[];
        let mut piece_start = 0usize;
        let mut start = 0usize;
        ends.iter().map(move |&end| {
            let end = end as usize;
            while start >= piece_start + piece.len() {
                piece_start += piece.len();
                match pieces.next() {
                    Some(p) => piece = p,
                    None => {
                        // Past the data: nothing to read (the caller checks the bounds).
                        piece = &[];
                        break;
                    }
                }
            }
            let line = piece
                .get(start - piece_start..end.saturating_sub(1).saturating_sub(piece_start))
                .unwrap_or_default();
            start = end;
            line
        })
    }

    /// All the bytes, copied (for tests and rare paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> (Lines, Vec<u32>) {
        let mut l = Lines::default();
        l.push_piece(Bytes::from_static(b"a1\na22\n"));
        l.push_line(b"r1");
        l.push_line(b"r22");
        l.push_piece(Bytes::from_static(b"b1\n"));
        l.push_line(b"r3");
        (l, vec![3, 7, 10, 14, 17, 20])
    }

    #[test]
    fn lines_read_back_whole_whatever_piece_they_lie_in() {
        let (l, ends) = lines();
        assert_eq!(l.len(), 20);
        assert_eq!(l.to_vec(), b"a1\na22\nr1\nr22\nb1\nr3\n");
        let each: Vec<&[u8]> = l.each(&ends).collect();
        assert_eq!(each, [&b"a1"[..], b"a22", b"r1", b"r22", b"b1", b"r3"]);
        // Ends past the data read nothing (not the last line again).
        let mut short = Lines::default();
        short.push_piece(Bytes::from_static(b"ab\n"));
        short.push_line(b"cd");
        let each: Vec<&[u8]> = short.each(&[3, 6, 9]).collect();
        assert_eq!(each, [&b"ab"[..], b"cd", b""]);
    }

    #[test]
    fn splits_at_every_line_end_keep_every_byte_once() {
        let (whole, ends) = lines();
        let all = whole.to_vec();
        for (n, &at) in std::iter::once(&0).chain(&ends).enumerate() {
            let (mut front, _) = lines();
            let back = front.split_off(at as usize);
            assert_eq!(front.to_vec(), &all[..at as usize], "split {n}");
            assert_eq!(back.to_vec(), &all[at as usize..], "split {n}");
            assert_eq!(front.len() + back.len(), all.len());
            let (mut dropped, _) = lines();
            dropped.drop_front(at as usize);
            assert_eq!(dropped.to_vec(), &all[at as usize..], "drop {n}");
            let rest: Vec<u32> = ends[n..].iter().map(|e| e - at).collect();
            assert_eq!(dropped.each(&rest).count(), ends.len() - n);
        }
    }

    #[test]
    fn pieces_are_shared_not_copied() {
        let body = Bytes::from(b"x1\nx2\n".to_vec());
        let mut l = Lines::default();
        l.push_piece(body.slice(..));
        let pieces = l.pieces();
        assert_eq!(pieces[0].as_ptr(), body.as_ptr());
        let back = l.split_off(3);
        assert_eq!(back.pieces[0].as_ptr(), body[3..].as_ptr());
    }
}
