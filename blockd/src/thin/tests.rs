use super::*;

fn pool(d: &Path) -> Arc<ThinPool> {
    ThinPool::open(Engine::global().unwrap(), d).unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn thin_reads_zeros_and_keeps_writes_across_reopen() {
    let d = tempfile::tempdir().unwrap();
    let p = pool(d.path());
    p.create("a", 10 << 30, false).unwrap();
    let v = p.volume("a").unwrap();
    let mut buf = vec![1u8; 8192];
    v.read_at(&mut buf, 5 << 30).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    assert_eq!(v.extents(0, 10 << 30).unwrap().len(), 1);
    let a = pattern(1, 200_000);
    v.write_at(&a, 12345, false).unwrap();
    v.flush().unwrap();
    // Unflushed: may or may not survive; flushed must.
    drop(v);
    drop(p);
    let p = pool(d.path());
    let v = p.volume("a").unwrap();
    let mut back = vec![0u8; a.len()];
    v.read_at(&mut back, 12345).unwrap();
    assert_eq!(back, a);
    assert_eq!(p.allocated(), 4 * CHUNK);
    let ex = v.extents(0, 1 << 20).unwrap();
    assert_eq!(
        ex[0],
        Extent {
            len: 4 * CHUNK,
            hole: false
        }
    );
}

#[test]
fn a_shared_chunk_wholly_overwritten_is_remapped_only_once_written() {
    let d = tempfile::tempdir().unwrap();
    let p = pool(d.path());
    p.create("v", 4 * CHUNK, false).unwrap();
    let v = p.volume("v").unwrap();
    let a = pattern(1, CHUNK as usize);
    v.write_at(&a, 0, false).unwrap();
    p.copy("v", "s", true).unwrap();
    assert!(
        v.plan_write(0, CHUNK as usize).is_none(),
        "the NBD fast path leaves shared chunks to the copy path"
    );
    let old = p.state.lock().unwrap().devs[&v.no].map[&0];
    let (puts, changed, _ticket) = p.plan_write(v.no, 0, CHUNK as usize, true, true).unwrap();
    assert!(matches!(puts[..], [Put::Cow { .. }]));
    assert!(!changed);
    // A flush now (another request's) must not commit a map entry for
    // data that is not on disk yet.
    assert_eq!(p.state.lock().unwrap().devs[&v.no].map[&0], old);
    drop(puts);
    p.state.lock().unwrap().copying.clear();
    let b = pattern(2, CHUNK as usize);
    v.write_at(&b, 0, false).unwrap();
    let mut back = vec![0u8; CHUNK as usize];
    v.read_at(&mut back, 0).unwrap();
    assert_eq!(back, b);
    p.volume("s").unwrap().read_at(&mut back, 0).unwrap();
    assert_eq!(back, a, "the snapshot keeps the old data");
}

#[test]
fn snapshots_keep_old_data_and_clones_diverge() {
    let d = tempfile::tempdir().unwrap();
    let p = pool(d.path());
    p.create("v", 64 << 20, false).unwrap();
    let v = p.volume("v").unwrap();
    let a = pattern(1, 4 << 20);
    v.write_at(&a, 0, false).unwrap();
    p.copy("v", "s", true).unwrap();
    let before = p.allocated();
    let b = pattern(2, 3000);
    v.write_at(&b, 100, false).unwrap();
    assert_eq!(p.allocated(), before + CHUNK, "one chunk copied");
    let s = p.volume("s").unwrap();
    assert!(s.write_at(&b, 0, false).is_err(), "snapshots are read-only");
    let mut back = vec![0u8; a.len()];
    s.read_at(&mut back, 0).unwrap();
    assert_eq!(back, a);
    v.read_at(&mut back, 0).unwrap();
    assert_eq!(&back[100..3100], &b[..]);
    assert_eq!(&back[..100], &a[..100]);
    assert_eq!(&back[3100..], &a[3100..]);
    p.copy("s", "c", false).unwrap();
    let c = p.volume("c").unwrap();
    c.trim(0, 1 << 20).unwrap();
    c.read_at(&mut back, 0).unwrap();
    assert!(back[..1 << 20].iter().all(|x| *x == 0));
    assert_eq!(&back[1 << 20..], &a[1 << 20..]);
    s.read_at(&mut back, 0).unwrap();
    assert_eq!(back, a, "the clone's trim leaves the snapshot alone");
    // Deleting the origin and the snapshot keeps the clone's data; the
    // clone's own deletion gives everything back.
    p.flush().unwrap();
    drop((v, s, c));
    p.delete("v").unwrap();
    p.delete("s").unwrap();
    let c = p.volume("c").unwrap();
    c.read_at(&mut back, 0).unwrap();
    assert_eq!(&back[1 << 20..], &a[1 << 20..]);
    drop(c);
    drop(p);
    let p = pool(d.path());
    let c = p.volume("c").unwrap();
    c.read_at(&mut back, 0).unwrap();
    assert_eq!(&back[1 << 20..], &a[1 << 20..]);
    drop(c);
    p.delete("c").unwrap();
    assert_eq!(p.allocated(), 0);
}

#[test]
fn torn_journal_tail_is_cut_and_checkpoint_replays() {
    let d = tempfile::tempdir().unwrap();
    let p = pool(d.path());
    p.create("v", 1 << 30, false).unwrap();
    let v = p.volume("v").unwrap();
    v.write_at(&pattern(3, 1 << 20), 0, false).unwrap();
    v.flush().unwrap();
    {
        let mut j = p.journal.lock().unwrap();
        let ck = {
            let st = p.state.lock().unwrap();
            Checkpoint {
                seq: st.seq,
                devices: st
                    .devs
                    .iter()
                    .map(|(no, d)| CkptDevice {
                        no: *no,
                        id: d.id.clone(),
                        size: d.size,
                        read_only: d.read_only,
                        runs: runs(&d.map),
                    })
                    .collect(),
            }
        };
        p.checkpoint(&mut j, &ck).unwrap();
    }
    v.write_at(&pattern(4, 1 << 20), 1 << 20, false).unwrap();
    v.flush().unwrap();
    drop(v);
    drop(p);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path().join("meta.log"))
        .unwrap();
    log.write_all(b"UJR1\x10\x00\x00\x00garbage").unwrap();
    drop(log);
    let p = pool(d.path());
    let v = p.volume("v").unwrap();
    let mut back = vec![0u8; 2 << 20];
    v.read_at(&mut back, 0).unwrap();
    assert_eq!(&back[..1 << 20], &pattern(3, 1 << 20)[..]);
    assert_eq!(&back[1 << 20..], &pattern(4, 1 << 20)[..]);
    p.create("w", 1 << 20, false).unwrap();
    drop(v);
    drop(p);
    let p = pool(d.path());
    assert!(p.info("w").is_some(), "appends after the cut replay");
    // One process (one opener) per pool.
    assert!(ThinPool::open(Engine::global().unwrap(), d.path()).is_err());
}

#[test]
fn changed_ranges_are_what_was_written_since_a_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = pool(d.path());
    p.create("v", 64 << 20, false).unwrap();
    let v = p.volume("v").unwrap();
    v.write_at(&pattern(1, 3 << 20), 0, false).unwrap();
    v.write_at(&pattern(2, 100), 10 << 20, false).unwrap();
    v.flush().unwrap();
    // Full: every allocated range.
    assert_eq!(
        p.changed(None, "v").unwrap(),
        vec![(0, 3 << 20), (10 << 20, CHUNK)]
    );
    p.copy("v", "s1", true).unwrap();
    assert_eq!(p.changed(Some("s1"), "v").unwrap(), vec![]);
    // A write over a shared chunk, a new chunk, and a trim: each differs.
    v.write_at(&pattern(3, 10), CHUNK + 5, false).unwrap();
    v.write_at(&pattern(4, 2 * CHUNK as usize), 20 << 20, false)
        .unwrap();
    v.trim(10 << 20, CHUNK).unwrap();
    v.flush().unwrap();
    p.copy("v", "s2", true).unwrap();
    assert_eq!(
        p.changed(Some("s1"), "s2").unwrap(),
        vec![(CHUNK, CHUNK), (10 << 20, CHUNK), (20 << 20, 2 * CHUNK)]
    );
    assert!(matches!(
        p.changed(Some("nope"), "v"),
        Err(Error::NotFound(_))
    ));
}
