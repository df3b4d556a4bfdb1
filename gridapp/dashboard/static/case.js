// The case's position on a small map: its cell, its neighbours and the point (no basemap needed).
(function () {
  "use strict";
  function draw() {
    var el = document.getElementById("case-map");
    if (!el || el.dataset.drawn) return;
    el.dataset.drawn = "1";
    var point = JSON.parse(el.dataset.location);
    var latlng = [point.coordinates[1], point.coordinates[0]];
    var map = L.map(el, {zoomControl: true}).setView(latlng, 16);
    fetch(el.dataset.cellsUrl, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (data) {
      L.geoJSON(data, {style: function (f) {
        var own = f.properties.code === el.dataset.cellCode;
        return {color: own ? "#1a5276" : "#8aa", weight: own ? 3 : 1, fillColor: "#eef3f3", fillOpacity: own ? 0.8 : 0.4};
      }}).addTo(map);
      L.circleMarker(latlng, {radius: 8, color: "#fff", weight: 2, fillColor: "#c0392b", fillOpacity: 1})
        .bindTooltip("案件位置").addTo(map);
      map.invalidateSize();  // the grid layout may have resized the box since the map was made
      map.setView(latlng, 16);
      el.dataset.ready = "1";
    });
  }
  draw();
  // The live refresh replaces the page's content: draw the new map element.
  document.addEventListener("gridapp:refreshed", draw);
})();
