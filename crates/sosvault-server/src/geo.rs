//! Nearest free unit by great-circle distance.
//!
//! `rstar` works with Euclidean distances, so each position is stored as a
//! point on the unit sphere in 3-D (x, y, z). The straight-line (chord)
//! distance between two such points grows strictly with the great-circle
//! distance between them, so the R-tree's nearest neighbours in 3-D are
//! exactly the nearest by great-circle distance, anywhere on the globe (no
//! projection, no trouble at the poles or the antimeridian). The distance
//! shown to people is then computed with the haversine formula.

use std::collections::{HashMap, HashSet};

use rstar::{AABB, PointDistance, RTree, RTreeObject};

use crate::unit::UnitId;

/// Mean Earth radius in metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres (haversine).
pub fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

fn to_xyz(lat: f64, lon: f64) -> [f64; 3] {
    let (lat, lon) = (lat.to_radians(), lon.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// The kind of a unit.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// A police team.
    Police,
    /// An ambulance / medical team.
    Medical,
    /// A counsellor (mental-health crisis).
    Counsellor,
}

impl UnitKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Police => "police",
            UnitKind::Medical => "medical",
            UnitKind::Counsellor => "counsellor",
        }
    }

    /// Parses [`UnitKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "police" => Some(UnitKind::Police),
            "medical" => Some(UnitKind::Medical),
            "counsellor" => Some(UnitKind::Counsellor),
            _ => None,
        }
    }

    /// The kind of unit a panic category needs.
    pub fn for_category(c: sosvault::Category) -> Self {
        match c {
            sosvault::Category::Medical => UnitKind::Medical,
            sosvault::Category::MentalHealth => UnitKind::Counsellor,
            // Police, and any category added later: send the police.
            _ => UnitKind::Police,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    unit: UnitId,
    xyz: [f64; 3],
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 3]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xyz)
    }
}

impl PointDistance for Entry {
    fn distance_2(&self, p: &[f64; 3]) -> f64 {
        let d = [self.xyz[0] - p[0], self.xyz[1] - p[1], self.xyz[2] - p[2]];
        d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    }
}

/// Free units per kind, in R-trees, with their positions.
#[derive(Default)]
pub struct UnitIndex {
    trees: HashMap<UnitKind, RTree<Entry>>,
    positions: HashMap<UnitId, (UnitKind, (f64, f64))>,
    busy: HashSet<UnitId>,
}

impl UnitIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn remove_from_tree(&mut self, unit: UnitId) {
        if let Some((kind, (lat, lon))) = self.positions.get(&unit)
            && let Some(tree) = self.trees.get_mut(kind)
        {
            tree.remove(&Entry {
                unit,
                xyz: to_xyz(*lat, *lon),
            });
        }
    }

    /// Records a unit's position (free units move in the tree).
    pub fn set_position(&mut self, unit: UnitId, kind: UnitKind, lat: f64, lon: f64) {
        self.remove_from_tree(unit);
        self.positions.insert(unit, (kind, (lat, lon)));
        if !self.busy.contains(&unit) {
            self.trees.entry(kind).or_default().insert(Entry {
                unit,
                xyz: to_xyz(lat, lon),
            });
        }
    }

    /// Forgets a unit (revoked): it is never picked again.
    pub fn remove(&mut self, unit: UnitId) {
        self.remove_from_tree(unit);
        self.positions.remove(&unit);
        self.busy.remove(&unit);
    }

    /// A unit's last position.
    pub fn position(&self, unit: UnitId) -> Option<(f64, f64)> {
        self.positions.get(&unit).map(|(_, p)| *p)
    }

    /// Takes a unit out of the free pool.
    pub fn mark_busy(&mut self, unit: UnitId) {
        if self.busy.insert(unit) {
            self.remove_from_tree(unit);
        }
    }

    /// Puts a unit back into the free pool.
    pub fn mark_free(&mut self, unit: UnitId) {
        if self.busy.remove(&unit)
            && let Some((kind, (lat, lon))) = self.positions.get(&unit).cloned()
        {
            self.trees.entry(kind).or_default().insert(Entry {
                unit,
                xyz: to_xyz(lat, lon),
            });
        }
    }

    /// Whether the unit is busy.
    pub fn is_busy(&self, unit: UnitId) -> bool {
        self.busy.contains(&unit)
    }

    /// The free units of `kind`, nearest to `(lat, lon)` first, with their
    /// great-circle distances in metres.
    pub fn free_by_distance(
        &self,
        kind: UnitKind,
        lat: f64,
        lon: f64,
    ) -> impl Iterator<Item = (UnitId, f64)> + '_ {
        let q = to_xyz(lat, lon);
        self.trees
            .get(&kind)
            .into_iter()
            .flat_map(move |tree| tree.nearest_neighbor_iter(&q))
            .filter_map(move |e| {
                let pos = self.position(e.unit)?;
                Some((e.unit, haversine_m((lat, lon), pos)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::{HashSet, UnitId, UnitIndex, UnitKind, haversine_m};
    use crate::unit::named;

    #[test]
    fn haversine_known_distance() {
        // Kota Junction to Talwandi, about 8.9 km.
        let d = haversine_m((25.2230, 75.8817), (25.1433, 75.8436));
        assert!((8_500.0..9_800.0).contains(&d), "{d}");
        assert!(haversine_m((0.0, 179.9), (0.0, -179.9)) < 23_000.0);
    }

    /// The nearest free unit of `kind` not in `exclude`.
    fn nearest(
        idx: &UnitIndex,
        kind: UnitKind,
        lat: f64,
        lon: f64,
        exclude: &HashSet<UnitId>,
    ) -> Option<(UnitId, f64)> {
        idx.free_by_distance(kind, lat, lon)
            .find(|(u, _)| !exclude.contains(u))
    }

    #[test]
    fn nearest_of_the_right_kind_skipping_busy_and_excluded() {
        let mut idx = UnitIndex::new();
        idx.set_position(named("p-far"), UnitKind::Police, 25.20, 75.85);
        idx.set_position(named("p-near"), UnitKind::Police, 25.145, 75.84);
        idx.set_position(named("m-nearest"), UnitKind::Medical, 25.1433, 75.8436);
        let none = HashSet::new();
        let (u, d) = nearest(&idx, UnitKind::Police, 25.1433, 75.8436, &none).unwrap();
        assert_eq!(u, named("p-near"));
        assert!(d < 1_000.0);
        idx.mark_busy(named("p-near"));
        assert_eq!(
            nearest(&idx, UnitKind::Police, 25.1433, 75.8436, &none)
                .unwrap()
                .0,
            named("p-far")
        );
        idx.mark_free(named("p-near"));
        let ex: HashSet<UnitId> = [named("p-near")].into();
        assert_eq!(
            nearest(&idx, UnitKind::Police, 25.1433, 75.8436, &ex)
                .unwrap()
                .0,
            named("p-far")
        );
        // Moving a free unit moves it in the tree.
        idx.set_position(named("p-far"), UnitKind::Police, 25.1434, 75.8437);
        assert_eq!(
            nearest(&idx, UnitKind::Police, 25.1433, 75.8436, &none)
                .unwrap()
                .0,
            named("p-far")
        );
        assert!(nearest(&idx, UnitKind::Counsellor, 25.0, 75.0, &none).is_none());
    }

    #[test]
    fn chord_order_matches_great_circle_order() {
        // Across the antimeridian: the unit at 179.9 E is nearer to 179.9 W than one at 170 W.
        let mut idx = UnitIndex::new();
        idx.set_position(named("east"), UnitKind::Police, 0.0, 179.9);
        idx.set_position(named("west"), UnitKind::Police, 0.0, -170.0);
        let none = HashSet::new();
        assert_eq!(
            nearest(&idx, UnitKind::Police, 0.0, -179.9, &none)
                .unwrap()
                .0,
            named("east")
        );
    }
}
