//! Values the workspace's tests build the same way in every crate.

use sosvault::manifest::{Manifest, ManifestTrustee};
use sosvault::{ControlRoomPublic, Timestamp, TrusteePublic};

/// A deployment manifest for a test, unsigned: `deployment`, version 1,
/// issued and valid from `now` for an hour, 2 of `trustees` to open (named
/// `trustee-0`, `trustee-1`, … and reached at `url(i)`), and `control_room`
/// at `http://127.0.0.1:1`.
///
/// A test that needs another field says so with struct update syntax:
///
/// ```
/// use sosvault::manifest::Manifest;
/// use sosvault::{ControlRoomKey, Timestamp, TrusteeKey};
///
/// let now = Timestamp::now();
/// let trustees: Vec<_> = (0..3).map(|_| TrusteeKey::generate().public()).collect();
/// let control_room = ControlRoomKey::generate().public();
/// let m = Manifest {
///     version: 2,
///     ..sosvault_testkit::fixtures::manifest("kota-test", now, control_room, &trustees, |i| {
///         format!("https://trustee-{i}.example")
///     })
/// };
/// assert_eq!((m.version, m.threshold, m.trustees[1].name.as_str()), (2, 2, "trustee-1"));
/// ```
pub fn manifest(
    deployment: &str,
    now: Timestamp,
    control_room: ControlRoomPublic,
    trustees: &[TrusteePublic],
    url: impl Fn(usize) -> String,
) -> Manifest {
    Manifest {
        deployment: deployment.into(),
        version: 1,
        issued_at: now,
        not_before: now,
        not_after: now.plus(3600),
        threshold: 2,
        trustees: trustees
            .iter()
            .enumerate()
            .map(|(i, public)| ManifestTrustee {
                name: format!("trustee-{i}"),
                public: public.clone(),
                url: url(i),
            })
            .collect(),
        control_room,
        control_room_url: "http://127.0.0.1:1".into(),
    }
}
