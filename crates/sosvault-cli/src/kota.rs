//! Kota's coaching areas and the demo's simulated people.
//!
//! Coordinates are the approximate centres of each neighbourhood (WGS 84),
//! where the coaching institutes, hostels and PG rooms are.

/// A neighbourhood of Kota.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    /// Its name.
    pub name: &'static str,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// The coaching areas.
pub const AREAS: [Area; 10] = [
    Area {
        name: "Talwandi",
        lat: 25.1427,
        lon: 75.8433,
    },
    Area {
        name: "Rajeev Gandhi Nagar",
        lat: 25.1373,
        lon: 75.8350,
    },
    Area {
        name: "Landmark City",
        lat: 25.2012,
        lon: 75.8318,
    },
    Area {
        name: "Kunhadi",
        lat: 25.1948,
        lon: 75.8410,
    },
    Area {
        name: "Mahaveer Nagar",
        lat: 25.1331,
        lon: 75.8452,
    },
    Area {
        name: "Vigyan Nagar",
        lat: 25.1559,
        lon: 75.8592,
    },
    Area {
        name: "Indra Vihar",
        lat: 25.1402,
        lon: 75.8262,
    },
    Area {
        name: "Jawahar Nagar",
        lat: 25.1512,
        lon: 75.8400,
    },
    Area {
        name: "Dadabari",
        lat: 25.1604,
        lon: 75.8252,
    },
    Area {
        name: "Coral Park",
        lat: 25.1447,
        lon: 75.8188,
    },
];

/// A team to seed: name, kind, area index, and a small offset so teams in one
/// area are not on the same spot.
pub struct Team {
    /// Display name.
    pub name: String,
    /// `police`, `medical` or `counsellor`.
    pub kind: &'static str,
    /// Position.
    pub lat: f64,
    /// Position.
    pub lon: f64,
}

/// Police in every area, ambulances in five, counsellors in three.
pub fn teams() -> Vec<Team> {
    let mut out = Vec::new();
    for a in AREAS {
        out.push(Team {
            name: format!("PCR {}", a.name),
            kind: "police",
            lat: a.lat + 0.0012,
            lon: a.lon - 0.0009,
        });
    }
    for i in [0usize, 2, 4, 5, 8] {
        let a = AREAS[i];
        out.push(Team {
            name: format!("Ambulance {}", a.name),
            kind: "medical",
            lat: a.lat - 0.0015,
            lon: a.lon + 0.0011,
        });
    }
    for i in [1usize, 3, 7] {
        let a = AREAS[i];
        out.push(Team {
            name: format!("Counsellor {}", a.name),
            kind: "counsellor",
            lat: a.lat + 0.0007,
            lon: a.lon + 0.0014,
        });
    }
    out
}

const FIRST: [&str; 24] = [
    "Aarav",
    "Priya",
    "Rohan",
    "Ananya",
    "Vihaan",
    "Ishita",
    "Kabir",
    "Sneha",
    "Arjun",
    "Diya",
    "Aditya",
    "Meera",
    "Yash",
    "Kavya",
    "Siddharth",
    "Pooja",
    "Harsh",
    "Nandini",
    "Manav",
    "Tanvi",
    "Rahul",
    "Aisha",
    "Dev",
    "Riya",
];
const LAST: [&str; 16] = [
    "Sharma",
    "Verma",
    "Gupta",
    "Singh",
    "Yadav",
    "Mishra",
    "Patel",
    "Iyer",
    "Reddy",
    "Das",
    "Jain",
    "Meena",
    "Choudhary",
    "Nair",
    "Khan",
    "Agarwal",
];
const HOMETOWNS: [&str; 10] = [
    "Patna, Bihar",
    "Lucknow, Uttar Pradesh",
    "Indore, Madhya Pradesh",
    "Ranchi, Jharkhand",
    "Jaipur, Rajasthan",
    "Nagpur, Maharashtra",
    "Bhopal, Madhya Pradesh",
    "Varanasi, Uttar Pradesh",
    "Guwahati, Assam",
    "Bhubaneswar, Odisha",
];
const INSTITUTES: [&str; 5] = [
    "Allen Career Institute",
    "Resonance",
    "Motion Education",
    "Vibrant Academy",
    "Bansal Classes",
];
const BLOOD: [&str; 6] = ["B+", "O+", "A+", "AB+", "O-", "B-"];
const NOTES: [&str; 5] = [
    "",
    "asthma; carries an inhaler",
    "allergic to penicillin",
    "type 1 diabetes; insulin in the hostel fridge",
    "",
];

/// A simulated student's profile and home area.
pub fn student(i: usize) -> (sosvault::Profile, Area) {
    let area = AREAS[i % AREAS.len()];
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i * 7 + 3) % LAST.len()];
    let mut p = sosvault::Profile::new(
        format!("{first} {last}"),
        format!("+91 9{:09}", 829_000_000 + i * 7_919 % 170_000_000),
    );
    p.address = HOMETOWNS[(i * 3) % HOMETOWNS.len()].into();
    p.hostel = format!(
        "{} Hostel, {}, room {}",
        ["Shanti", "Saraswati", "Gayatri", "Krishna"][i % 4],
        area.name,
        100 + i % 200
    );
    p.institute = INSTITUTES[(i * 5) % INSTITUTES.len()].into();
    p.guardian_name = format!(
        "{} {last}",
        ["Suresh", "Anita", "Rajesh", "Sunita", "Mahesh"][i % 5]
    );
    p.guardian_phone = format!("+91 8{:09}", 700_000_000 + i * 6_151 % 200_000_000);
    p.blood_group = BLOOD[i % BLOOD.len()].into();
    p.medical_notes = NOTES[i % NOTES.len()].into();
    (p, area)
}
