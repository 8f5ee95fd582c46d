use super::*;

fn collect(dir: &Path) -> (Vec<Vec<u8>>, ReplayStats) {
    let mut out = Vec::new();
    let stats = replay(dir, |_, p| out.push(p.to_vec())).unwrap();
    (out, stats)
}

fn write_records(dir: &Path, records: &[Vec<u8>], segment_bytes: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (wal, thread) =
        Wal::open(Config { dir: dir.into(), segment_bytes, durability: Durability::Fsync, seal: None }).unwrap();
    rt.block_on(async {
        for r in records {
            wal.append(r.clone()).await.unwrap();
        }
    });
    drop(wal);
    thread.join();
}

#[test]
fn round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..100u32).map(|i| vec![i as u8; i as usize * 7]).collect();
    write_records(dir.path(), &records[..50], 1000);
    write_records(dir.path(), &records[50..], 1000);
    assert!(list_segments(dir.path()).unwrap().len() > 5);
    let (got, stats) = collect(dir.path());
    assert_eq!(got, records);
    assert_eq!(stats.corrupt_records, 0);
    assert_eq!(stats.truncated_bytes, 0);
}

/// A segment of five 40-byte records: (its dir, the records, its path, its bytes).
fn five_records() -> (tempfile::TempDir, Vec<Vec<u8>>, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40]).collect();
    write_records(dir.path(), &records, 1 << 20);
    let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
    let full = fs::read(&path).unwrap();
    (dir, records, path, full)
}

#[test]
fn torn_tail_is_truncated_at_every_offset() {
    let (dir, records, path, full) = five_records();
    let rec = HEADER + 40;
    for cut in 0..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (got, stats) = collect(dir.path());
        assert_eq!(got, records[..cut / rec].to_vec(), "cut at {cut}");
        assert_eq!(stats.truncated_bytes as usize, cut % rec);
        assert_eq!(stats.corrupt_records, 0);
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, cut - cut % rec);
    }
}

#[test]
fn flipped_bit_skips_only_that_record() {
    let (dir, records, path, full) = five_records();
    let rec = HEADER + 40;
    // Every bit of record 2, header included.
    for bit in (2 * rec * 8)..(3 * rec * 8) {
        let mut data = full.clone();
        data[bit / 8] ^= 1 << (bit % 8);
        fs::write(&path, &data).unwrap();
        let (got, stats) = collect(dir.path());
        let mut want = records.clone();
        want.remove(2);
        assert_eq!(got, want, "bit {bit}");
        assert_eq!(stats.corrupt_records, 1, "bit {bit}");
    }
}

#[test]
fn appends_report_segments_and_released_segments_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (wal, thread) =
        Wal::open(Config { dir: dir.path().into(), segment_bytes: 100, durability: Durability::Fsync, seal: None })
            .unwrap();
    rt.block_on(async {
        let first = wal.active_segment();
        assert_eq!(wal.append(vec![1; 60]).await.unwrap(), first);
        let second = wal.append(vec![2; 60]).await.unwrap();
        assert_eq!(second, first + 1, "a full segment rolls over");
        let third = wal.rotate().await.unwrap();
        assert_eq!((third, wal.active_segment()), (second + 1, second + 1));
        // Rotating an empty segment keeps it.
        assert_eq!(wal.rotate().await.unwrap(), third);
        assert_eq!(wal.append(vec![3; 10]).await.unwrap(), third);
        assert_eq!(wal.release_before(second).unwrap(), 1);
        // Never the active segment, whatever is asked.
        assert_eq!(wal.release_before(u64::MAX).unwrap(), 1);
    });
    drop(wal);
    thread.join();
    let (got, _) = collect(dir.path());
    assert_eq!(got, vec![vec![3; 10]]);
}

/// Every record of `path` through a [`SegmentReader`]: (offset, payload), and the reader.
fn read_segment(path: &Path, from: u64, limit: u64) -> (Vec<(u64, Vec<u8>)>, SegmentReader) {
    let mut reader = SegmentReader::open(path).unwrap();
    reader.seek(from);
    let mut out = Vec::new();
    while let Some((offset, payload)) = reader.next_record(limit).unwrap() {
        out.push((offset, payload.to_vec()));
    }
    (out, reader)
}

#[test]
fn positions_hook_and_segment_reader_agree() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_seen = seen.clone();
    let (wal, thread) = Wal::open_with_hook(
        Config { dir: dir.path().into(), segment_bytes: 1 << 20, durability: Durability::Os, seal: None },
        Box::new(move |pos, payload| hook_seen.lock().unwrap().push((pos, payload))),
    )
    .unwrap();
    // Sizes around and above the reader's chunk, so records straddle its buffer.
    let records: Vec<Vec<u8>> =
        (0..40u32).map(|i| vec![i as u8; [10, 70_000, 300_000, 1][i as usize % 4] + i as usize]).collect();
    let positions: Vec<Position> = rt.block_on(async {
        let mut out = Vec::new();
        for r in &records {
            out.push(wal.append_at(r.clone()).await.unwrap());
        }
        out
    });
    drop(wal);
    thread.join();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, positions.iter().copied().zip(records.iter().cloned()).collect::<Vec<_>>());
    assert_eq!(positions[0].offset, 0);
    for i in 1..positions.len() {
        let want = if positions[i].segment == positions[i - 1].segment {
            positions[i - 1].offset + framed_len(records[i - 1].len())
        } else {
            0
        };
        assert_eq!(positions[i].offset, want, "record {i}");
    }
    let segments: Vec<u64> = positions.iter().map(|p| p.segment).collect();
    assert!(segments.first() != segments.last(), "the records span segments");

    let mut got = Vec::new();
    for (segment, path) in list_segments(dir.path()).unwrap() {
        let (records, reader) = read_segment(&path, 0, u64::MAX);
        assert_eq!((reader.corrupt_records, reader.trailing_bytes), (0, 0));
        got.extend(records.into_iter().map(|(offset, p)| (Position { segment, offset }, p)));
    }
    assert_eq!(got, seen);

    // Resuming at a record boundary, and stopping at a limit.
    let first = positions[0].segment;
    let in_first: Vec<_> = seen.iter().filter(|(p, _)| p.segment == first).collect();
    let path = dir.path().join(segment_name(first));
    let (rest, _) = read_segment(&path, in_first[3].0.offset, u64::MAX);
    assert_eq!(rest.len(), in_first.len() - 3);
    assert_eq!(rest[0].1, in_first[3].1);
    let (head, reader) = read_segment(&path, 0, in_first[5].0.offset);
    assert_eq!(head.len(), 5);
    assert_eq!((reader.position(), reader.corrupt_records, reader.trailing_bytes), (in_first[5].0.offset, 0, 0));
}

#[test]
fn segment_reader_skips_corrupt_records_and_stops_at_torn_tails() {
    let (_dir, records, path, full) = five_records();
    let rec = HEADER + 40;
    for bit in (2 * rec * 8)..(3 * rec * 8) {
        let mut data = full.clone();
        data[bit / 8] ^= 1 << (bit % 8);
        fs::write(&path, &data).unwrap();
        let (got, reader) = read_segment(&path, 0, u64::MAX);
        let mut want: Vec<_> = records.iter().enumerate().map(|(i, r)| ((i * rec) as u64, r.clone())).collect();
        want.remove(2);
        assert_eq!(got, want, "bit {bit}");
        assert_eq!((reader.corrupt_records, reader.trailing_bytes), (1, 0), "bit {bit}");
    }
    for cut in 0..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (got, reader) = read_segment(&path, 0, u64::MAX);
        assert_eq!(got.len(), cut / rec, "cut at {cut}");
        assert_eq!((reader.corrupt_records, reader.trailing_bytes as usize), (0, cut % rec), "cut at {cut}");
        assert_eq!(reader.position() as usize, cut, "cut at {cut}");
    }
    // The reader never changes the file.
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, full.len() - 1);
}

#[test]
fn oversized_record_is_refused_and_log_goes_on() {
    // Real device errors (ENOSPC) are tested end to end on a small tmpfs in the server's
    // tests; here: a refused record leaves the log usable.
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (wal, thread) =
        Wal::open(Config { dir: dir.path().into(), segment_bytes: 1 << 20, durability: Durability::Fsync, seal: None })
            .unwrap();
    rt.block_on(async {
        wal.append(b"one".to_vec()).await.unwrap();
        assert!(wal.append(vec![0; MAX_RECORD + 1]).await.is_err());
        wal.append(b"two".to_vec()).await.unwrap();
    });
    drop(wal);
    thread.join();
    let (got, _) = collect(dir.path());
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
}

mod sealed {
    use super::*;
    use spoor_seal::Kind;

    fn key(b: u8) -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes(&[b; 32], Path::new(&format!("key-{b}"))))
    }

    fn write_sealed(dir: &Path, records: &[Vec<u8>], segment_bytes: u64, seal: &Arc<MasterKey>) -> Vec<Position> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let config = Config { dir: dir.into(), segment_bytes, durability: Durability::Fsync, seal: Some(seal.clone()) };
        let (wal, thread) = Wal::open(config).unwrap();
        let positions = rt.block_on(async {
            let mut out = Vec::new();
            for r in records {
                out.push(wal.append_at(r.clone()).await.unwrap());
            }
            out
        });
        drop(wal);
        thread.join();
        positions
    }

    fn replay_with(dir: &Path, seal: Option<&MasterKey>) -> Result<(Vec<Vec<u8>>, ReplayStats), Error> {
        let mut out = Vec::new();
        let stats = replay_sealed(dir, seal, |_, p| out.push(p.to_vec()))?;
        Ok((out, stats))
    }

    #[test]
    fn sealed_segments_round_trip_and_hold_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let records: Vec<Vec<u8>> =
            (0..60u32).map(|i| format!("secret-value-{i:04}").repeat(i as usize + 1).into()).collect();
        let positions = write_sealed(dir.path(), &records, 2000, &k);
        assert!(list_segments(dir.path()).unwrap().len() > 3);
        for (_, path) in list_segments(dir.path()).unwrap() {
            let bytes = fs::read(&path).unwrap();
            assert!(spoor_seal::is_sealed(&bytes));
            assert!(!bytes.windows(12).any(|w| w == b"secret-value"), "{} holds plaintext", path.display());
        }
        let (got, stats) = replay_with(dir.path(), Some(&k)).unwrap();
        assert_eq!(got, records);
        assert_eq!((stats.corrupt_records, stats.truncated_bytes), (0, 0));
        // Positions the appender got are where a segment reader finds the same records.
        for (pos, record) in positions.iter().zip(&records).step_by(7) {
            let mut r = SegmentReader::open_sealed(&segment_path(dir.path(), pos.segment), Some(k.clone())).unwrap();
            r.seek(pos.offset);
            let (offset, payload) = r.next_record(u64::MAX).unwrap().unwrap();
            assert_eq!((offset, payload), (pos.offset, record.as_slice()));
        }
    }

    #[test]
    fn a_wrong_missing_or_needless_key_is_refused_naming_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        write_sealed(dir.path(), &[b"one".to_vec()], 1 << 20, &key(2));
        let err = replay_with(dir.path(), Some(&key(3))).unwrap_err();
        assert!(matches!(&err, Error::Seal(e) if e.kind == Kind::WrongKey), "{err}");
        assert!(err.to_string().contains(".wal") && err.to_string().contains("key-3"), "{err}");
        let err = replay_with(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("is encrypted"), "{err}");
        let err = SegmentReader::open(&list_segments(dir.path()).unwrap()[0].1).err().unwrap();
        assert!(err.to_string().contains("is encrypted"), "{err}");

        let plain = tempfile::tempdir().unwrap();
        super::write_records(plain.path(), &[b"two".to_vec()], 1 << 20);
        let err = replay_with(plain.path(), Some(&key(2))).unwrap_err();
        assert!(err.to_string().contains("is not encrypted"), "{err}");
    }

    #[test]
    fn a_flipped_byte_in_a_sealed_record_skips_it_never_returns_it() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(4);
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40]).collect();
        write_sealed(dir.path(), &records, 1 << 20, &k);
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let full = fs::read(&path).unwrap();
        let rec = stored_len(40, true) as usize;
        let start = spoor_seal::HEADER_LEN + 2 * rec;
        for at in start..start + rec {
            let mut data = full.clone();
            data[at] ^= 0x10;
            fs::write(&path, &data).unwrap();
            let (got, stats) = replay_with(dir.path(), Some(&k)).unwrap();
            let mut want = records.clone();
            want.remove(2);
            assert_eq!(got, want, "byte {at}");
            assert_eq!(stats.corrupt_records, 1, "byte {at}");
        }
        // A record whose CRC is made to match again still fails its tag.
        let mut data = full.clone();
        let payload = start + HEADER;
        data[payload + 20] ^= 1;
        let len = (data.len() - payload).min(rec - HEADER);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&data[start + 4..start + 8]), &data[payload..payload + len]);
        data[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, &data).unwrap();
        let (got, stats) = replay_with(dir.path(), Some(&k)).unwrap();
        assert_eq!((got.len(), stats.corrupt_records), (4, 1));
    }
}
