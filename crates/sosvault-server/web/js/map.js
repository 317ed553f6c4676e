// The map (Leaflet). With no tile URL configured it draws no tiles at all:
// a plain background, a few place labels for orientation, and the markers,
// so it works on a machine with no network. With `SOSVAULT_SERVER_TILE_URL`
// set, it draws those tiles (e.g. OpenStreetMap) underneath.
(function () {
  'use strict';
  const SV = window.SV;
  const L = window.L;

  /** Kota, Rajasthan: the coaching areas the demo uses (approximate centres). */
  SV.KOTA = { lat: 25.1500, lon: 75.8420 };
  // The demo's areas (crates/sosvault-cli/src/kota.rs), as orientation labels.
  const PLACES = [
    ['Talwandi', 25.1427, 75.8433],
    ['Rajeev Gandhi Nagar', 25.1373, 75.835],
    ['Landmark City', 25.2012, 75.8318],
    ['Kunhadi', 25.1948, 75.841],
    ['Mahaveer Nagar', 25.1331, 75.8452],
    ['Vigyan Nagar', 25.1559, 75.8592],
    ['Indra Vihar', 25.1402, 75.8262],
    ['Jawahar Nagar', 25.1512, 75.84],
    ['Dadabari', 25.1604, 75.8252],
    ['Coral Park', 25.1447, 75.8188],
  ];

  /** A map in `el`; returns the Leaflet map. */
  SV.makeMap = function (el, opts) {
    opts = opts || {};
    const cfg = window.SOSVAULT_CONFIG || {};
    const map = L.map(el, {
      center: [SV.KOTA.lat, SV.KOTA.lon],
      zoom: opts.zoom || 13,
      zoomControl: true,
      attributionControl: true,
    });
    map.attributionControl.setPrefix('Leaflet');
    if (cfg.tileUrl) {
      L.tileLayer(cfg.tileUrl, { maxZoom: 19, attribution: cfg.tileAttribution || '' }).addTo(map);
      el.classList.add('map-tiles');
    } else {
      el.classList.add('map-offline');
      let note = SV.t('map.offline');
      map.attributionControl.addAttribution(note);
      document.addEventListener('sv-lang', () => {
        map.attributionControl.removeAttribution(note);
        note = SV.t('map.offline');
        map.attributionControl.addAttribution(note);
      });
      // Labels sit in their own pane under the markers, so no marker is ever hidden.
      map.createPane('places').style.zIndex = 350;
      const labels = L.layerGroup().addTo(map);
      for (const [name, lat, lon] of PLACES) {
        L.marker([lat, lon], {
          icon: L.divIcon({ className: 'place-label', html: '', iconSize: null }),
          interactive: false,
          keyboard: false,
          pane: 'places',
        })
          .addTo(labels)
          .getElement()
          .append(document.createTextNode(name));
      }
    }
    L.control.scale({ imperial: false }).addTo(map);
    return map;
  };

  /** A round marker icon: `kind` is a CSS modifier (police, medical, ...). */
  SV.dotIcon = function (cls, label) {
    return L.divIcon({
      className: 'mk ' + cls,
      html: label ? '<span class="mk-label"></span>' : '',
      iconSize: [26, 26],
      iconAnchor: [13, 13],
    });
  };

  /** Sets a marker's label text and its test/debug attributes. */
  SV.tagMarker = function (marker, label, data) {
    const e = marker.getElement();
    if (!e) return;
    const span = e.querySelector('.mk-label');
    if (span) span.textContent = label || '';
    const ll = marker.getLatLng();
    e.dataset.lat = ll.lat.toFixed(6);
    e.dataset.lon = ll.lng.toFixed(6);
    for (const [k, v] of Object.entries(data || {})) e.dataset[k] = v;
  };
})();
