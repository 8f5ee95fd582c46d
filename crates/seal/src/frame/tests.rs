use std::io::Write;
use std::path::Path;

use super::*;
use crate::header::is_sealed;
use crate::rotate;

fn key(b: u8) -> MasterKey {
    MasterKey::from_bytes(&[b; 32], Path::new(&format!("key-{b}")))
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn frames_of(sealed: &[u8], k: &MasterKey) -> Result<Frames> {
    Frames::open(&sealed[..HEADER_LEN.min(sealed.len())], sealed.len() as u64, k, Path::new("t"))
}

fn read(sealed: &[u8], k: &MasterKey, range: Range<u64>) -> Result<Vec<u8>> {
    let f = frames_of(sealed, k)?;
    let s = f.sealed_range(&range);
    f.open_range(&range, &sealed[s.start as usize..s.end as usize], Path::new("t"))
}

#[test]
fn lengths_round_trip_at_every_frame_boundary() {
    for plain in [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 5] {
        assert_eq!(plain_len(sealed_len(plain)), Some(plain), "{plain}");
    }
    // A length no sealed file has (a tag cut in half) is refused.
    assert_eq!(plain_len(HEADER_LEN as u64 + 3), None);
    assert_eq!(plain_len(HEADER_LEN as u64 + SEALED_FRAME + TAG_LEN as u64), None);
}

#[test]
fn any_range_reads_back_exactly_and_touches_only_its_frames() {
    let k = key(1);
    for n in [0usize, 10, FRAME as usize, FRAME as usize * 2 + 123] {
        let plain = data(n);
        let sealed = seal(&k, &plain);
        assert!(is_sealed(&sealed));
        assert_eq!(sealed.len() as u64, sealed_len(n as u64));
        let f = frames_of(&sealed, &k).unwrap();
        assert_eq!(f.plain_len(), n as u64);
        for (a, b) in
            [(0, n), (0, 1.min(n)), (n / 2, n), (n.saturating_sub(3), n), (5.min(n), (FRAME as usize + 9).min(n))]
        {
            let got = read(&sealed, &k, a as u64..b as u64).unwrap();
            assert_eq!(got, plain[a..b], "{n}: {a}..{b}");
        }
    }
    let sealed = seal(&k, &data(4 * FRAME as usize));
    let f = frames_of(&sealed, &k).unwrap();
    // Ten bytes in the third frame: one frame read.
    let r = f.sealed_range(&(2 * FRAME + 3..2 * FRAME + 13));
    assert_eq!(r.end - r.start, SEALED_FRAME);
}

#[test]
fn streaming_writes_match_one_shot_sealing_in_length_and_content() {
    let k = key(2);
    let plain = data(3 * FRAME as usize + 77);
    let mut w = FrameWriter::new(&k, Vec::new()).unwrap();
    for chunk in plain.chunks(1000) {
        w.write_all(chunk).unwrap();
    }
    let sealed = w.finish().unwrap();
    assert_eq!(sealed.len() as u64, sealed_len(plain.len() as u64));
    assert_eq!(read(&sealed, &k, 0..plain.len() as u64).unwrap(), plain);
}

#[test]
fn every_flipped_byte_is_detected_never_returned() {
    let k = key(3);
    let plain = data(FRAME as usize + 500);
    let sealed = seal(&k, &plain);
    // Every byte of the header prefix, of a slot, of both frames and their tags.
    for at in (0..sealed.len()).step_by(97).chain([0, 5, 9, HEADER_LEN, sealed.len() - 1]) {
        let mut bad = sealed.clone();
        bad[at] ^= 0x40;
        match read(&bad, &k, 0..plain.len() as u64) {
            Ok(got) => {
                // A flip in the unused second slot changes nothing that is read.
                assert_eq!(got, plain, "byte {at} flipped yet different data came back");
                assert!(
                    (HEADER_LEN - super::super::header::SLOT_LEN..HEADER_LEN).contains(&at),
                    "byte {at} flipped unnoticed"
                );
            }
            Err(e) => assert!(matches!(e.kind, Kind::Corrupt | Kind::WrongKey | Kind::NotSealed), "{e}"),
        }
    }
}

#[test]
fn frames_cannot_be_cut_or_swapped_and_a_wrong_key_is_named() {
    let k = key(4);
    let plain = data(2 * FRAME as usize);
    let sealed = seal(&k, &plain);
    // Cut at the frame boundary: the first frame was not sealed as the last one.
    let cut = &sealed[..HEADER_LEN + SEALED_FRAME as usize];
    assert_eq!(read(cut, &k, 0..10).unwrap_err().kind, Kind::Corrupt);
    let mut swapped = sealed.clone();
    let (a, b) = (HEADER_LEN, HEADER_LEN + SEALED_FRAME as usize);
    let first = swapped[a..b].to_vec();
    swapped.copy_within(b..b + SEALED_FRAME as usize, a);
    swapped[b..b + SEALED_FRAME as usize].copy_from_slice(&first);
    assert!(read(&swapped, &k, 0..10).is_err());
    let err = frames_of(&sealed, &key(5)).err().unwrap();
    assert_eq!(err.kind, Kind::WrongKey);
    assert!(err.message.contains("key-5"), "{err}");
}

#[test]
fn records_seal_independently_and_detect_any_change() {
    let (header, dk) = Header::new(&key(6), Layout::Records);
    assert_eq!(header.layout(), Layout::Records);
    let mut out = Vec::new();
    crate::seal_record(&dk, b"hello trace", &mut out);
    assert_eq!(out.len(), 11 + crate::RECORD_OVERHEAD);
    assert_eq!(crate::open_record(&dk, &out).unwrap(), b"hello trace");
    for i in 0..out.len() {
        let mut bad = out.clone();
        bad[i] ^= 1;
        assert!(crate::open_record(&dk, &bad).is_err(), "byte {i}");
    }
}

#[test]
fn rotation_passes_keep_every_file_readable_with_one_of_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let (old, new) = (key(7), key(8));
    let plain = data(1000);
    std::fs::write(&path, seal(&old, &plain)).unwrap();
    let read_with = |k: &MasterKey| {
        let f = SealedFile::open(std::fs::File::open(&path).unwrap(), &path, k)?;
        f.read_range(0..plain.len() as u64)
    };
    let before = std::fs::read(&path).unwrap();
    assert!(rotate::add_key(&path, &old, &new).unwrap());
    assert!(!rotate::add_key(&path, &old, &new).unwrap(), "idempotent");
    assert_eq!(read_with(&old).unwrap(), plain);
    assert_eq!(read_with(&new).unwrap(), plain);
    assert!(rotate::drop_other_keys(&path, &new).unwrap());
    assert_eq!(read_with(&old).unwrap_err().kind, Kind::WrongKey);
    assert_eq!(read_with(&new).unwrap(), plain);
    // Only the header changed: the data was not rewritten.
    let after = std::fs::read(&path).unwrap();
    assert_eq!(before[HEADER_LEN..], after[HEADER_LEN..]);
    // Rotating back works the same way; a third key is refused with both files named.
    assert!(rotate::add_key(&path, &new, &old).unwrap());
    let err = rotate::add_key(&path, &key(9), &key(10)).unwrap_err();
    assert!(err.message.contains("key-9") && err.message.contains("key-10"), "{err}");
}
