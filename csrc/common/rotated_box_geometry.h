// Geometry of rotated rectangles, shared by the box_iou_rotated and nms_rotated kernels.
//
// A rotated box is (cx, cy, w, h, angle) with the angle in degrees, counter-clockwise on screen (image y
// points down). Its corners are centre + R * (+-w/2, +-h/2) with R = [[cos, sin], [-sin, cos]].
//
// The intersection of two boxes is computed by Sutherland-Hodgman clipping: box 1's quadrilateral is
// clipped by the four half-planes of box 2, and the area of the result is the shoelace sum. Everything
// runs in double precision whatever the input type, after moving the origin to the midpoint of the two
// centres (so large image coordinates cost no precision). The pure-PyTorch twin in
// libdet/layers/rotated_boxes.py follows the same steps in the same order; keep them in sync.
//
// Every function here compiles for the host and, under nvcc, for the device.
#pragma once

#include <cmath>

#include "host_device.h"

namespace libdet {
namespace rotated_geometry {

// Clipping a convex quadrilateral by four half-planes gives at most 8 vertices in exact arithmetic; the
// extra room absorbs near-duplicate vertices that rounding can add when edges (nearly) coincide.
constexpr int kMaxVertices = 16;
constexpr double kDegreesToRadians = 0.017453292519943295;  // pi / 180

// What the IoU needs of one box, computed once per box: its centre, the half-axis vectors a (along the
// width) and b (along the height), its area and the radius of its circumscribed circle.
struct BoxGeometry {
  double cx;
  double cy;
  double ax;
  double ay;
  double bx;
  double by;
  double area;
  double radius;
  bool valid;  // both sides > 0 (false for NaN too)
};

// The box (cx, cy, w, h, angle in degrees) rotates local offsets (u, v) to (c*u + s*v, -s*u + c*v).
template <typename T>
LIBDET_HOST_DEVICE BoxGeometry box_geometry(const T* box) {
  BoxGeometry g;
  const double w = static_cast<double>(box[2]);
  const double h = static_cast<double>(box[3]);
  const double theta = static_cast<double>(box[4]) * kDegreesToRadians;
  const double c = cos(theta);
  const double s = sin(theta);
  const double half_w = 0.5 * w;
  const double half_h = 0.5 * h;
  g.cx = static_cast<double>(box[0]);
  g.cy = static_cast<double>(box[1]);
  g.ax = c * half_w;
  g.ay = -s * half_w;
  g.bx = s * half_h;
  g.by = c * half_h;
  g.area = w * h;
  g.radius = 0.5 * sqrt(w * w + h * h);
  g.valid = w > 0.0 && h > 0.0;
  return g;
}

// Corners of a box whose centre is moved to (cx, cy), in positive (counter-clockwise in x-right/y-up
// axes) order.
LIBDET_HOST_DEVICE void box_corners(const BoxGeometry& g, double cx, double cy, double* xs, double* ys) {
  xs[0] = cx + g.ax + g.bx;
  ys[0] = cy + g.ay + g.by;
  xs[1] = cx - g.ax + g.bx;
  ys[1] = cy - g.ay + g.by;
  xs[2] = cx - g.ax - g.bx;
  ys[2] = cy - g.ay - g.by;
  xs[3] = cx + g.ax - g.bx;
  ys[3] = cy + g.ay - g.by;
}

// Clips the polygon (px, py) of n vertices by the half-plane left of the directed line a -> b
// (inside means cross(b - a, p - a) >= 0). Writes the result to (qx, qy) and returns its vertex count.
LIBDET_HOST_DEVICE int clip_polygon_by_edge(
    const double* px,
    const double* py,
    int n,
    double ax,
    double ay,
    double bx,
    double by,
    double* qx,
    double* qy) {
  const double ex = bx - ax;
  const double ey = by - ay;
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const int j = (i + 1 < n) ? i + 1 : 0;
    const double si = ex * (py[i] - ay) - ey * (px[i] - ax);
    const double sj = ex * (py[j] - ay) - ey * (px[j] - ax);
    const bool inside_i = si >= 0.0;
    const bool inside_j = sj >= 0.0;
    if (inside_i && m < kMaxVertices) {
      qx[m] = px[i];
      qy[m] = py[i];
      ++m;
    }
    if (inside_i != inside_j && m < kMaxVertices) {
      // si and sj have different signs (one may be zero), so the denominator is non-zero.
      const double t = si / (si - sj);
      qx[m] = px[i] + t * (px[j] - px[i]);
      qy[m] = py[i] + t * (py[j] - py[i]);
      ++m;
    }
  }
  return m;
}

// Signed area of a polygon (positive for counter-clockwise order in x-right/y-up axes).
LIBDET_HOST_DEVICE double polygon_area(const double* xs, const double* ys, int n) {
  double twice_area = 0.0;
  for (int i = 0; i < n; ++i) {
    const int j = (i + 1 < n) ? i + 1 : 0;
    twice_area += xs[i] * ys[j] - xs[j] * ys[i];
  }
  return 0.5 * twice_area;
}

// IoU of two boxes. Degenerate boxes (a side <= 0 or NaN) give 0; boxes whose circumscribed circles
// are apart give 0 without clipping.
LIBDET_HOST_DEVICE double rotated_box_iou(const BoxGeometry& g1, const BoxGeometry& g2) {
  if (!(g1.valid && g2.valid)) {
    return 0.0;
  }
  // Origin at the midpoint of the two centres: box 1 sits at (dx, dy), box 2 at (-dx, -dy).
  const double dx = 0.5 * (g1.cx - g2.cx);
  const double dy = 0.5 * (g1.cy - g2.cy);
  const double radius_sum = g1.radius + g2.radius;
  if (4.0 * (dx * dx + dy * dy) > radius_sum * radius_sum) {
    return 0.0;
  }

  double xs2[4], ys2[4];
  box_corners(g2, -dx, -dy, xs2, ys2);
  double buf_x[2][kMaxVertices];
  double buf_y[2][kMaxVertices];
  box_corners(g1, dx, dy, buf_x[0], buf_y[0]);
  int n = 4;
  int cur = 0;
  for (int e = 0; e < 4 && n > 0; ++e) {
    const int f = (e + 1) & 3;
    n = clip_polygon_by_edge(
        buf_x[cur], buf_y[cur], n, xs2[e], ys2[e], xs2[f], ys2[f], buf_x[1 - cur], buf_y[1 - cur]);
    cur = 1 - cur;
  }
  const double intersection = polygon_area(buf_x[cur], buf_y[cur], n);
  if (!(intersection > 0.0)) {
    return 0.0;
  }
  return intersection / (g1.area + g2.area - intersection);
}

// IoU of two rotated boxes given as 5 values (cx, cy, w, h, angle in degrees).
template <typename T>
LIBDET_HOST_DEVICE double rotated_box_iou(const T* box1, const T* box2) {
  return rotated_box_iou(box_geometry(box1), box_geometry(box2));
}

}  // namespace rotated_geometry
}  // namespace libdet
