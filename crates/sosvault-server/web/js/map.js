// The map (Leaflet). With no tile URL configured it draws no tiles at all:
// a plain background, a few place labels for orientation, and the markers,
// so it works on a machine with no network. With `SOSVAULT_SERVER_TILE_URL`
// set, it draws those tiles (e.g. OpenStreetMap) underneath.
(function () {
  'use strict';
  const SV = window.SV;
  const L = window.L;

  /** Kota, Rajasthan: the coaching areas the demo uses (approximate centres). */
  SV.KOTA = { lat: 25.1445, lon: 75.8455 };
  const PLACES = [
    ['Talwandi', 25.1425, 75.835],
    ['Rajeev Gandhi Nagar', 25.1395, 75.8535],
    ['Indra Vihar', 25.1505, 75.8345],
    ['Mahaveer Nagar', 25.1305, 75.8455],
    ['Vigyan Nagar', 25.1575, 75.8535],
    ['Jawahar Nagar', 25.1585, 75.8385],
    ['Dadabari', 25.167, 75.8295],
    ['Landmark City', 25.2135, 75.8415],
    ['Kunhari', 25.2035, 75.8285],
    ['Coral Park', 25.1245, 75.8655],
    ['Kota Junction', 25.2225, 75.8805],
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
      map.attributionControl.addAttribution(SV.t('map.offline'));
      const labels = L.layerGroup().addTo(map);
      for (const [name, lat, lon] of PLACES) {
        L.marker([lat, lon], {
          icon: L.divIcon({ className: 'place-label', html: '', iconSize: null }),
          interactive: false,
          keyboard: false,
        })
          .addTo(labels)
          .getElement()
          .append(document.createTextNode(name));
      }
    }
    L.control.scale({ imperial: false }).addTo(map);
    el.setAttribute('role', 'region');
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
