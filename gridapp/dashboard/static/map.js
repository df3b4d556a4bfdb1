// The township map: cells and village outlines as the basemap (no tile server is reachable), incidents
// as vector tiles from the app (points from zoom 14, counted groups below), a panel for a clicked cell.
(function () {
  "use strict";
  var el = document.getElementById("map");
  var form = document.getElementById("map-filters");
  var panel = document.getElementById("cell-panel");
  var map = L.map(el, {preferCanvas: false, minZoom: 8, maxZoom: 19, zoomSnap: 1});
  var COLORS = {overdue: "#c0392b", "new": "#e67e22", open: "#2471a3", closed: "#7f8c8d", "void": "#b2babb"};
  var ORDER = ["overdue", "new", "open", "closed", "void"];

  function get(url) {
    return fetch(url, {credentials: "same-origin"}).then(function (r) { if (!r.ok) throw new Error(r.status); return r; });
  }

  var villages = L.geoJSON(null, {style: {color: "#555", weight: 2.5, fill: false}, interactive: false,
    onEachFeature: function (f, layer) { layer.bindTooltip(f.properties.name, {permanent: true, direction: "center", className: "village-label"}); }});
  var cells = L.geoJSON(null, {
    style: {color: "#8aa", weight: 1, fillColor: "#eef3f3", fillOpacity: 0.6},
    onEachFeature: function (f, layer) {
      layer.on("click", function () { showCell(f.properties.code, layer); });
      layer.bindTooltip(f.properties.name, {sticky: true});
    }
  });
  cells.addTo(map); villages.addTo(map);

  function showCell(code, layer) {
    cells.resetStyle();
    layer.setStyle({weight: 3, color: "#1a5276"});
    get(el.dataset.cellUrl.replace("CODE", encodeURIComponent(code))).then(function (r) { return r.text(); })
      .then(function (html) { panel.innerHTML = html; panel.dataset.cell = code; });
  }

  function worst(p) { for (var i = 0; i < ORDER.length; i++) if (p[ORDER[i]]) return ORDER[i]; return "open"; }

  var styles = {
    incidents: function (p) {
      return {radius: 5, weight: 1, color: "#fff", fill: true, fillOpacity: 0.9, fillColor: COLORS[p["class"]] || "#2471a3"};
    },
    clusters: function (p) {
      return {radius: Math.min(22, 4 + 3 * Math.log(1 + p.count)), weight: 1, color: "#fff", fill: true,
              fillOpacity: 0.75, fillColor: COLORS[worst(p)]};
    }
  };
  var incidents = null;

  function query() {
    var params = new URLSearchParams(new FormData(form));
    params.set("v", String(Date.now()));  // a change (live update or filter) fetches fresh tiles
    return params.toString();
  }

  function loadIncidents() {
    if (incidents) map.removeLayer(incidents);
    incidents = L.vectorGrid.protobuf(el.dataset.tilesUrl + "?" + query(), {
      vectorTileLayerStyles: styles, interactive: false, maxNativeZoom: 19, pane: "markerPane"
    });
    incidents.on("load", function () { el.dataset.tilesLoaded = String(Number(el.dataset.tilesLoaded || 0) + 1); });
    incidents.addTo(map);
  }

  Promise.all([get(el.dataset.cellsUrl).then(function (r) { return r.json(); }),
               get(el.dataset.villagesUrl).then(function (r) { return r.json(); })])
    .then(function (data) {
      cells.addData(data[0]); villages.addData(data[1]);
      fillCellPicker();
      if (data[0].features.length) map.fitBounds(cells.getBounds()); else map.setView([30.5, 120.0], 12);
      loadIncidents();
      el.dataset.ready = "1";
    });

  // The same panel from the keyboard: a list of the cells (the map's polygons take only clicks).
  var picker = document.getElementById("f-cell");
  function fillCellPicker() {
    cells.eachLayer(function (layer) {
      var p = layer.feature.properties, option = document.createElement("option");
      option.value = p.code; option.textContent = p.name + "（" + p.code + "）";
      picker.appendChild(option);
    });
  }
  picker.addEventListener("change", function () {
    cells.eachLayer(function (layer) {
      if (layer.feature.properties.code === picker.value) { map.fitBounds(layer.getBounds(), {maxZoom: 16}); showCell(picker.value, layer); }
    });
  });

  form.addEventListener("submit", function (e) { e.preventDefault(); loadIncidents(); });
  document.addEventListener("gridapp:changed", function () {
    loadIncidents();
    if (panel.dataset.cell) get(el.dataset.cellUrl.replace("CODE", panel.dataset.cell)).then(function (r) { return r.text(); })
      .then(function (html) { panel.innerHTML = html; });
  });
})();
